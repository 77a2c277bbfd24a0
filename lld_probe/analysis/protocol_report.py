"""summary.md and table1.md of a protocol folder: headline numbers, Table 1, and checks of the method's
claims (first-order theory, fresh-sample pass rates)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..store import write_text
from ..store.protocol_folder import read_protocol_table, read_protocol_tables
from .markdown import markdown_table
from .stats import method_summary, paired_lld_change, paired_wilcoxon, spearman, table1


def lld_breakdown_sections(protocol: pd.DataFrame, tokens: pd.DataFrame | None = None,
                           responses: pd.DataFrame | None = None) -> list[str]:
    """Markdown: LLD share and median Delta over all correct responses, by success rate p, by NTHR's
    selected share and by length; NTHR's selected tokens that also occur in a correct response."""
    from .lld_breakdown import (lld_by_length, lld_by_nthr_selection, lld_by_success_rate,
                                lld_over_correct_responses, selected_token_overlap_summary)
    columns = ["method", "bin", "n", "lld_share", "lld_low", "lld_high", "median_delta", "median_low", "median_high"]
    lines = []
    if responses is not None and not responses.empty:
        overall = lld_over_correct_responses(responses)
        lines += ["## Correct responses with Delta <= 0 (all kept questions; bootstrap 95% intervals)", "",
                  markdown_table(overall[["method", "n", "lazy"] + columns[3:]]), ""]
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
             f"beta {settings.get('nthr_beta', settings.get('beta'))}, eta {settings.get('nthr_eta', settings.get('eta'))}, vocab {settings.get('nthr_vocab', settings.get('vocab'))}."
             + _start_sentence(settings), "",
             "## Delta(x) per method (sequence sum over tokens; bootstrap 95% interval of the median over questions)", "",
             markdown_table(method_summary(protocol)), ""]
    if "grpo" in set(protocol["method"]):
        tests = []
        for other in [v for v in protocol["method"].unique() if v != "grpo"]:
            result = paired_wilcoxon(protocol, "grpo", other)
            tests.append({"comparison": f"{other} - grpo", **result, **paired_lld_change(protocol, "grpo", other)})
        lines += ["## Paired comparison with GRPO (Wilcoxon signed-rank over questions)",
                  "rescued: questions with Delta(x) <= 0 under GRPO but not under the method; newly_lazy: the "
                  "reverse; mcnemar_p: exact McNemar test of the two counts.", "",
                  markdown_table(pd.DataFrame(tests)), ""]
        lines += ["## Table 1: top-K overlap of GWHES ranking and ascending Delta(x) (GRPO)", "",
                  markdown_table(table1(protocol)), ""]
    lines += drift_section(protocol)
    rows = []
    for method, group in protocol.groupby("method", sort=False):
        rho, p_value = spearman(group["predicted_delta"], group["delta_sum"])
        rows.append({"method": method, "spearman_predicted_vs_measured": rho, "p_value": p_value})
    lines += lld_breakdown_sections(protocol, tokens, responses)
    lines += ["## How much of Delta the first-order theory explains", "", markdown_table(pd.DataFrame(rows)), "",
              "## NTHR selection", "",
              f"Mean fraction of incorrect-response tokens selected: {protocol['nthr_selected_fraction'].mean():.3f}", ""]
    return "\n".join(lines)


def _start_sentence(settings: dict) -> str:
    if not settings.get("optimizer_state"):
        return ""
    moments = ("its AdamW moments and step count (warm)" if settings.get("optimizer_moments") == "warm"
               else "a fresh AdamW (cold moments)")
    return f" Every step starts from the parameters of {settings['optimizer_state']} with {moments}."


def drift_section(protocol: pd.DataFrame) -> list[str]:
    """From warm moments: Delta under the moments alone (a step with zero gradient) and each method's Delta
    beyond it, per question (bootstrap 95% intervals); nothing for a cold start."""
    if "delta_drift_sum" not in protocol or protocol["delta_drift_sum"].isna().all():
        return []
    from .stats import bootstrap_ci, lld_rate
    first = protocol.drop_duplicates("question_id")
    drift = bootstrap_ci(first["delta_drift_sum"])
    rows = []
    for method, group in protocol.groupby("method", sort=False):
        beyond = group["delta_sum"] - group["delta_drift_sum"]
        median = bootstrap_ci(beyond)
        share = bootstrap_ci(beyond, lambda values: lld_rate(values))
        rows.append({"method": method, "questions": len(group), "share_beyond_drift_le_0": share[0],
                     "share_low": share[1], "share_high": share[2], "median_beyond_drift": median[0],
                     "ci_low": median[1], "ci_high": median[2]})
    return ["## The moments' drift (warm start)",
            "drift: Delta(x) of the correct responses under the step the saved moments make with zero gradient "
            f"(median over {len(first)} questions {drift[0]:.3g} [{drift[1]:.3g}, {drift[2]:.3g}], "
            f"{lld_rate(first['delta_drift_sum']):.3f} of questions <= 0). beyond drift: Delta(x) - drift, the "
            "group's own gradient's share of the step.", "", markdown_table(pd.DataFrame(rows)), ""]


def step_context_section(frame: pd.DataFrame) -> list[str]:
    """Markdown: per method, Delta(x) of each group under its own share of a step alone and under the whole
    step (questions and correct responses with Delta <= 0, medians, Wilcoxon of step vs own), and the
    methods against GRPO inside the step."""
    from scipy import stats as scipy_stats
    rows = []
    for method, group in frame.groupby("method", sort=False):
        own, step = group["delta_own_sum"], group["delta_step_sum"]
        test = scipy_stats.wilcoxon(step, own) if len(group) > 1 and (step != own).any() else None
        rows.append({"method": method, "questions": len(group),
                     "lazy_questions_own": f"{int((own <= 0).sum())}/{len(group)}",
                     "lazy_questions_step": f"{int((step <= 0).sum())}/{len(group)}",
                     "lld_rate_responses_own": group["lazy_own"].sum() / group["n_correct"].sum(),
                     "lld_rate_responses_step": group["lazy_step"].sum() / group["n_correct"].sum(),
                     "median_own": own.median(), "median_step": step.median(),
                     "step_minus_own_median": float((step - own).median()),
                     "wilcoxon_p": float(test.pvalue) if test is not None else float("nan")})
    lines = [f"## A group inside a training step ({int(frame['step_groups'].iloc[0])} kept groups per step, token mean)",
             "own: Delta(x) under the group's own share of the step's gradient alone; step: under the whole step "
             "(its own and the other groups' gradients). lld_rate_responses: correct responses with Delta <= 0. "
             "wilcoxon_p: step vs own, paired by question.", "", markdown_table(pd.DataFrame(rows)), ""]
    if "grpo" in set(frame["method"]):
        tests = []
        for context in ("own", "step"):
            for other in [v for v in frame["method"].unique() if v != "grpo"]:
                result = paired_wilcoxon(frame, "grpo", other, value=f"delta_{context}_sum")
                tests.append({"context": context, "comparison": f"{other} - grpo", **result,
                              **paired_lld_change(frame, "grpo", other, value=f"delta_{context}_sum")})
        lines += ["Each method against GRPO, own share alone and inside the step (Wilcoxon over questions; "
                  "lazy questions rescued / newly lazy, exact McNemar):", "", markdown_table(pd.DataFrame(tests)), ""]
    return lines


def write_protocol_report(folder, figures: bool = True) -> list[Path]:
    """Read a protocol folder and write summary.md, table1.md and figures/ into it."""
    folder = Path(folder)
    tables = read_protocol_tables(folder)
    protocol, questions, tokens, responses = (tables[name] for name in ("protocol", "questions", "tokens", "responses"))
    meta = json.loads((folder / "meta.json").read_text())
    if protocol.empty:
        raise ValueError(f"{folder}: no mixed group was kept, nothing to report "
                         f"({len(questions)} questions sampled, all-correct or all-wrong)")
    summary = protocol_summary(protocol, questions, meta, tokens=tokens, responses=responses)
    if (folder / "step_context.parquet").exists():
        summary += "\n" + "\n".join(step_context_section(read_protocol_table(folder / "step_context.parquet")))
    written = [write_text(summary, folder / "summary.md")]
    if "grpo" in set(protocol["method"]):
        written.append(write_text(markdown_table(table1(protocol)), folder / "table1.md"))
    if figures:
        from .protocol_figures import protocol_figures
        written += protocol_figures(protocol, tokens, folder / "figures", responses=responses)
    return written
