"""Protocol folders side by side (e.g. the same questions under one SGD step and one AdamW step): per
folder and method the LLD share and median Delta(x) with its bootstrap interval, and each method
against GRPO per question (Wilcoxon signed-rank)."""

from __future__ import annotations

import math

import pandas as pd

from .stats import method_summary, paired_lld_change, paired_values, paired_wilcoxon


def protocol_label(meta: dict) -> str:
    """"adamw lr 0.0001" from a protocol's meta.json."""
    settings = meta.get("settings", {})
    label = f"{settings.get('optimizer')} lr {settings.get('lr'):g}" if settings.get("lr") is not None else str(settings.get("optimizer"))
    return label + (f" {settings.get('optimizer_moments')} moments" if settings.get("optimizer_state") else "")


def same_setup_groups(runs) -> list[list]:
    """Protocol runs grouped by (model, task, seed, group size): groups of two or more are worth a side by side."""
    groups = {}
    for run in runs:
        settings = run.meta.get("settings", {})
        key = tuple(str(settings.get(name)) for name in ("model", "task", "seed", "group_size"))
        groups.setdefault(key, []).append(run)
    return [group for group in groups.values() if len(group) >= 2]


def compare_protocols(tables: dict) -> pd.DataFrame:
    """tables: label -> protocol.parquet frame. One row per (label, method): questions, LLD share,
    median Delta [interval], and against GRPO: median per-question difference, questions where the
    method is higher, Wilcoxon p, lazy questions rescued / newly lazy and their McNemar p."""
    rows = []
    for name, protocol in tables.items():
        summary = method_summary(protocol).set_index("method")
        for method in summary.index:
            row = {"protocol": name, "method": method, "questions": int(summary.loc[method, "questions"]),
                   "lld_share": summary.loc[method, "lld_share"], "median_delta": summary.loc[method, "median_delta"],
                   "ci_low": summary.loc[method, "ci_low"], "ci_high": summary.loc[method, "ci_high"],
                   "vs_grpo_median_difference": math.nan, "higher_than_grpo": "", "wilcoxon_p": math.nan,
                   "lazy_rescued_new": "", "mcnemar_p": math.nan}
            if method != "grpo" and "grpo" in summary.index:
                test = paired_wilcoxon(protocol, "grpo", method)
                pairs = paired_values(protocol, "grpo", method)
                change = paired_lld_change(protocol, "grpo", method)
                row.update(vs_grpo_median_difference=test["median_difference"], wilcoxon_p=test["p_value"],
                           higher_than_grpo=f"{int((pairs[method] > pairs['grpo']).sum())}/{len(pairs)}",
                           lazy_rescued_new=f"{change['rescued']}/{change['newly_lazy']}",
                           mcnemar_p=change["mcnemar_p"])
            rows.append(row)
    return pd.DataFrame(rows)


def comparison_markdown(tables: dict) -> str:
    from .markdown import markdown_table
    return "\n".join(["## Protocols side by side (same model and task; optimizer / lr)", "",
                      "LLD share: questions with Delta(x) <= 0. median_delta with its bootstrap 95% interval over "
                      "questions. vs GRPO: median of (method - GRPO) per question, questions where the method is "
                      "higher, Wilcoxon signed-rank p; lazy questions rescued / newly lazy against GRPO, exact McNemar p.", "", markdown_table(compare_protocols(tables)), ""])
