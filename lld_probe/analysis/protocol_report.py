"""summary.md and table1.md of a protocol folder: headline numbers, Table 1, and checks of the method's
claims (first-order theory, fresh-sample pass rates)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..store import write_text
from ..store.protocol_folder import read_protocol_tables
from .markdown import markdown_table
from .stats import paired_lld_change, paired_wilcoxon, spearman, table1, variant_summary


def lld_breakdown_sections(protocol: pd.DataFrame, tokens: pd.DataFrame | None = None,
                           responses: pd.DataFrame | None = None) -> list[str]:
    """Markdown: LLD share and median Delta over all correct responses, by success rate p, by NTHR's
    selected share and by length; NTHR's selected tokens that also occur in a correct response."""
    from .lld_breakdown import (lld_by_length, lld_by_nthr_selection, lld_by_success_rate,
                                lld_over_correct_responses, selected_token_overlap_summary)
    columns = ["variant", "bin", "n", "lld_share", "lld_low", "lld_high", "median_delta", "median_low", "median_high"]
    lines = []
    if responses is not None and not responses.empty:
        overall = lld_over_correct_responses(responses)
        lines += ["## Correct responses with Delta <= 0 (all kept questions; bootstrap 95% intervals)", "",
                  markdown_table(overall[["variant", "n", "lazy"] + columns[3:]]), ""]
    lines += ["## Where LLD lives: by the group's success rate p (questions; bootstrap 95% intervals)", "",
              markdown_table(lld_by_success_rate(protocol)[columns]), ""]
    by_selection = lld_by_nthr_selection(protocol).rename(columns={"x": "mean_selected_share"})
    if not by_selection.empty:
        lines += ["## By the share of the incorrect responses' tokens NTHR selects (questions; bootstrap 95% intervals)",
                  "Where NTHR selects nearly every incorrect token, Random with the same count is close to Pos "
                  "Only, and NTHR keeps only the tokens it left.", "",
                  markdown_table(by_selection[columns[:3] + ["mean_selected_share"] + columns[3:]]), ""]
    if responses is not None and not responses.empty:
        by_length = lld_by_length(responses)
        if not by_length.empty:
            lines += ["## Where LLD lives: by the length of the correct response (correct responses; bootstrap 95% intervals)",
                      "", markdown_table(by_length[columns]), ""]
    if tokens is not None and not tokens.empty and "nthr_selected" in tokens:
        overlap = selected_token_overlap_summary(tokens)
        if not overlap.empty:
            lines += ["## NTHR's selected tokens that also occur in a correct response of the group",
                      "(mean over questions of the per-question share; bootstrap 95% intervals)", "",
                      markdown_table(overlap), ""]
    return lines


def protocol_summary(protocol: pd.DataFrame, questions: pd.DataFrame, meta: dict, *,
                     tokens: pd.DataFrame | None = None, responses: pd.DataFrame | None = None) -> str:
    settings = meta.get("settings", {})
    lines = [f"# LLD protocol: {settings.get('model')} on {settings.get('task')}, one {settings.get('optimizer')} step "
             f"(lr {settings.get('lr')})", "",
             f"Questions sampled {len(questions)}, kept (mixed groups) {int(questions['mixed'].sum())}, "
             f"dropped {int((~questions['mixed']).sum())}. G = {settings.get('group_size')}, temperature "
             f"{settings.get('temperature')}, one {settings.get('optimizer')} step with lr {settings.get('lr')}, "
             f"beta {settings.get('nthr_beta', settings.get('beta'))}, eta {settings.get('nthr_eta', settings.get('eta'))}, vocab {settings.get('nthr_vocab', settings.get('vocab'))}.", "",
             "## Delta(x) per variant (sequence sum over tokens; bootstrap 95% interval of the median over questions)", "",
             markdown_table(variant_summary(protocol)), ""]
    if "grpo" in set(protocol["variant"]):
        tests = []
        for other in [v for v in protocol["variant"].unique() if v != "grpo"]:
            result = paired_wilcoxon(protocol, "grpo", other)
            tests.append({"comparison": f"{other} - grpo", **result, **paired_lld_change(protocol, "grpo", other)})
        lines += ["## Paired comparison with GRPO (Wilcoxon signed-rank over questions)",
                  "rescued: questions with Delta(x) <= 0 under GRPO but not under the variant; newly_lazy: the "
                  "reverse; mcnemar_p: exact McNemar test of the two counts.", "",
                  markdown_table(pd.DataFrame(tests)), ""]
        lines += ["## Table 1: top-K overlap of GWHES ranking and ascending Delta(x) (GRPO)", "",
                  markdown_table(table1(protocol)), ""]
    rows = []
    for variant, group in protocol.groupby("variant", sort=False):
        rho, p_value = spearman(group["predicted_delta"], group["delta_sum"])
        rows.append({"variant": variant, "spearman_predicted_vs_measured": rho, "p_value": p_value})
    lines += lld_breakdown_sections(protocol, tokens, responses)
    lines += ["## How much of Delta the first-order theory explains", "", markdown_table(pd.DataFrame(rows)), "",
              "## NTHR selection", "",
              f"Mean fraction of incorrect-response tokens selected: {protocol['nthr_selected_fraction'].mean():.3f}", ""]
    return "\n".join(lines)


def write_protocol_report(folder, figures: bool = True) -> list[Path]:
    """Read a protocol folder and write summary.md, table1.md and figures/ into it."""
    folder = Path(folder)
    tables = read_protocol_tables(folder)
    protocol, questions, tokens, responses = (tables[name] for name in ("protocol", "questions", "tokens", "responses"))
    meta = json.loads((folder / "meta.json").read_text())
    if protocol.empty:
        raise ValueError(f"{folder}: no mixed group was kept, nothing to report "
                         f"({len(questions)} questions sampled, all-correct or all-wrong)")
    written = [write_text(protocol_summary(protocol, questions, meta, tokens=tokens, responses=responses),
                          folder / "summary.md")]
    if "grpo" in set(protocol["variant"]):
        written.append(write_text(markdown_table(table1(protocol)), folder / "table1.md"))
    if figures:
        from .protocol_figures import protocol_figures
        written += protocol_figures(protocol, tokens, folder / "figures", responses=responses)
    return written
