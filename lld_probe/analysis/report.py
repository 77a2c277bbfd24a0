"""`lld-probe report` / `lld-probe figures`: any mix of runs (our stores, protocol folders, TRL
output_dirs, verl dumps) -> figures (PNG + PDF) and a markdown summary with tables."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..store import write_text
from .load import Run, load
from ..core.lld import lld_rate
from .markdown import markdown_table
from .protocol_report import protocol_summary
from .training import accuracy_curves, final_accuracy_table, lld_rate_by_step, with_delta


def _load_all(paths, correct_threshold: float | None = None, correct_reward: str | None = None) -> list[Run]:
    runs = [path if isinstance(path, Run) else
            load(path, correct_threshold=correct_threshold, correct_reward=correct_reward) for path in paths]
    if not runs:
        raise ValueError("no runs given")
    return runs


def write_figures(paths, out_dir, *, correct_threshold: float | None = None,
                  correct_reward: str | None = None) -> list[Path]:
    """Every figure the runs support into out_dir; returns the written files."""
    from .protocol_figures import protocol_figures
    from .training_figures import training_figures
    runs = _load_all(paths, correct_threshold, correct_reward)
    written = []
    for run in runs:
        if run.kind == "protocol":
            written += protocol_figures(run.extra["protocol"], run.tokens, Path(out_dir) / run.name,
                                        responses=run.responses)
    training = [run for run in runs if run.kind != "protocol"]
    if training:
        written += training_figures(training, out_dir)
    return written


def lld_table(runs) -> pd.DataFrame:
    """Per run: responses, share correct and the rule that decided it, LLD rate over all measured correct
    responses, mean Delta."""
    rows = []
    for run in runs:
        row = {"run": run.name, "method": run.method, "steps": run.responses["step"].nunique(),
               "responses": len(run.responses)}
        correct = run.responses["correct"]
        row["share_correct"] = float(correct.astype(float).mean()) if not correct.isna().any() else math.nan
        row["correct_by"] = run.meta.get("correctness_rule", "")
        if "logp_after" in run.responses.columns and run.responses["logp_after"].notna().any():
            frame = with_delta(run.responses)
            measured = frame.dropna(subset=["delta"])
            correct, incorrect = measured[measured["correct"]], measured[~measured["correct"]]
            row["lld_rate"] = lld_rate(correct["delta"])
            row["left_out"] = int(frame["delta"].isna().sum())      # truncated / unmeasured: in no LLD statistic
            row["lld_rate_last10"] = float(lld_rate_by_step(run.responses).tail(10)["lld_rate"].mean())
            row["delta_correct"] = float(correct["delta"].mean())
            row["delta_incorrect"] = float(incorrect["delta"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def rescore_note(run) -> str:
    """How a re-scored run's likelihoods were measured: windows, skipped steps, token exactness."""
    responses, meta = run.responses, run.meta
    windows = ", ".join(str(int(w)) for w in sorted(responses["window_steps"].dropna().unique()))
    text = responses[responses["tokenization"] == "text"]
    failed = int((~text["roundtrip_ok"].astype(bool)).sum())
    skipped = meta.get("skipped_steps") or {}
    parts = [f"{run.name}: Re-scored from checkpoints ({meta.get('source')} run {meta.get('rescored_from')}): "
             f"Delta over windows of {windows} optimizer step(s) between checkpoints"]
    if skipped:
        parts.append(f"{len(skipped)} logged step(s) skipped for lack of a bracketing checkpoint "
                     f"({', '.join(list(skipped)[:5])}{', ...' if len(skipped) > 5 else ''})")
    if len(text):
        parts.append(f"{len(text)} of {len(responses)} responses re-tokenised from the logged text; {failed} "
                     f"({failed / len(text):.1%}) do not round-trip and are left out (unmeasured)")
    else:
        parts.append("token ids from the log")
    unverified = int((~responses["prompt_ok"].astype(bool)).sum()) if "prompt_ok" in responses.columns else 0
    if unverified:
        parts.append(f"{unverified} of {len(responses)} ({unverified / len(responses):.1%}) prompts rebuilt from the "
                     f"logged text could not be verified and are left out (unmeasured)")
    return "; ".join(parts) + ".\n"


def precision_note(run) -> str | None:
    """For a run scored from low-precision weights: its measured resolution of Delta (lld/delta_resolution) and
    the share of correct responses whose |Delta| is below it (not evidence of LLD); None for float32 runs."""
    precision = run.meta.get("probe_precision")
    resolution = run.scalar("lld/delta_resolution")
    if resolution.empty and (precision is None or precision in ("float32", "float64")):
        return None
    text = f"{run.name}: log-likelihoods computed from {precision or 'low-precision weights'} (float32 cannot be recovered)"
    if resolution.empty:
        return text + "; no resolution of Delta was recorded.\n"
    worst = float(resolution["value"].max())
    text += (f"; resolution of Delta (a lower bound of the rounding: a re-score in another layout at unchanged "
             f"parameters) up to {worst:.3g} nats")
    if "logp_after" in run.responses.columns:
        measured = with_delta(run.responses).dropna(subset=["delta"])
        correct = measured[measured["correct"].astype(bool)]
        if len(correct):
            below = float((correct["delta"].abs() < worst).mean())
            text += f"; {below:.0%} of correct responses have |Delta| below it (not evidence of LLD)"
    return text + ".\n"


def training_summary(runs) -> str:
    lines = ["# Training runs", "", "## Per run", "", markdown_table(lld_table(runs)), ""]
    logs_only = [run.name for run in runs if "logp_after" not in run.responses.columns]
    if logs_only:
        lines += [f"LLD columns are empty for {', '.join(logs_only)}: TRL and verl logs hold no likelihoods "
                  f"after each update; re-score the run from its checkpoints (`lld-probe rescore`, "
                  f"docs/rescore.md), or train with lld_probe's probes (LLDGRPOTrainer, or LikelihoodProbeMixin on "
                  f"your GRPOTrainer) to record them.", ""]
    lines += [rescore_note(run) for run in runs if run.meta.get("rescored_from")]
    lines += [note for note in map(precision_note, runs) if note]
    splits = {run.name: run.meta["eval_split"] for run in runs if run.meta.get("eval_split")}
    for name, split in splits.items():
        lines += [f"Held-out questions of {name}: {split}.", ""]
    curves = accuracy_curves(runs)
    if not curves.empty:
        lines += ["## Held-out greedy accuracy (mean and 95% t-interval across seeds; change = last - first, paired by seed)",
                  "", markdown_table(final_accuracy_table(curves)), ""]
    lines += paired_sections(runs)
    warnings = [f"- {run.name}: {w}" for run in runs for w in run.warnings]
    if warnings:
        lines += ["## Warnings", ""] + warnings + [""]
    return "\n".join(lines)


def paired_sections(runs, baseline: str = "grpo") -> list[str]:
    """Per method the run metrics over seeds, and each method against the baseline paired by seed (when the
    baseline and another method share two or more seeds)."""
    from .paired_runs import RUN_METRICS, method_means, paired_differences, run_metrics
    metrics = run_metrics(runs)
    differences = paired_differences(metrics, baseline)
    if differences.empty or differences["seeds"].max() < 2:
        return []
    legend = "; ".join(f"{name}: {text}" for name, text in RUN_METRICS.items())
    return ["## Per method over seeds (mean and 95% t-interval)", legend + ".", "",
            markdown_table(method_means(metrics)), "",
            f"## Each method against {baseline}, paired by seed",
            "mean_difference: mean over seeds of (method - baseline) with its 95% t-interval; higher: seeds where "
            "the method is higher; paired t-test and Wilcoxon signed-rank p (two-sided).", "",
            markdown_table(differences), "", "## Per run", "", markdown_table(metrics), ""]


def write_report(paths, out_dir, *, correct_threshold: float | None = None, correct_reward: str | None = None) -> Path:
    """summary.md (+ figures/) for the runs; returns the summary path. correct_reward / correct_threshold
    say what is correct (see lld_probe.analysis.load)."""
    runs = _load_all(paths, correct_threshold, correct_reward)
    out = Path(out_dir)
    figures = write_figures(runs, out / "figures")
    sections = []
    for run in runs:
        if run.kind == "protocol":
            sections.append(protocol_summary(run.extra["protocol"], run.extra["questions"], run.meta,
                                             tokens=run.tokens, responses=run.responses))
    from .optimizer_comparison import comparison_markdown, protocol_label, same_setup_groups
    for protocols in same_setup_groups([run for run in runs if run.kind == "protocol"]):
        sections.append(comparison_markdown({f"{run.name}: {protocol_label(run.meta)}": run.extra["protocol"]
                                             for run in protocols}))
    training = [run for run in runs if run.kind != "protocol"]
    if training:
        sections.append(training_summary(training))
    pngs = [f for f in figures if f.suffix == ".png"]
    sections.append("## Figures\n\n" + "\n".join(f"![{f.stem}]({f.relative_to(out).as_posix()})" for f in pngs) + "\n")
    return write_text("\n\n".join(sections), out / "summary.md")
