"""Training runs of several methods on the same seeds, paired by seed: per run the held-out accuracy, the LLD
rate and the mean Delta of correct responses; per method against a baseline the per-seed differences with a
t-interval, a paired t-test and a Wilcoxon signed-rank test (PAPER Table 2 reports single runs)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..core.lld import lld_rate
from .training import accuracy_curves, mean_interval, with_delta

RUN_METRICS = {
    "acc_last": "held-out greedy accuracy at the last evaluation",
    "acc_mean": "mean held-out accuracy over the evaluations after step 0",
    "acc_gain": "accuracy at the last evaluation minus at step 0",
    "lld_rate": "share of the measured correct responses with Delta <= 0 over the whole run",
    "delta_correct": "mean Delta of the measured correct responses over the whole run",
}


def run_metrics(runs) -> pd.DataFrame:
    """One row per run: method, seed and RUN_METRICS (NaN where the run has no evaluation or no probes)."""
    curves = accuracy_curves(runs)
    rows = []
    for run in runs:
        settings = run.meta.get("settings", {})
        row = {"run": run.name, "method": run.method, "seed": settings.get("seed", run.meta.get("seed"))}
        curve = curves[curves["run"] == run.name].sort_values("step")
        later = curve[curve["step"] > curve["step"].min()] if len(curve) else curve
        row["acc_last"] = float(curve["accuracy"].iloc[-1]) if len(curve) else math.nan
        row["acc_mean"] = float(later["accuracy"].mean()) if len(later) else math.nan
        row["acc_gain"] = float(curve["accuracy"].iloc[-1] - curve["accuracy"].iloc[0]) if len(curve) > 1 else math.nan
        row["lld_rate"] = row["delta_correct"] = math.nan
        if "logp_after" in run.responses.columns and run.responses["logp_after"].notna().any():
            frame = with_delta(run.responses).dropna(subset=["delta"])
            correct = frame[frame["correct"]]["delta"]
            row["lld_rate"], row["delta_correct"] = lld_rate(correct), float(correct.mean())
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", "method", "seed", *RUN_METRICS])


def paired_differences(metrics: pd.DataFrame, baseline: str = "grpo") -> pd.DataFrame:
    """Per (method, metric): the seeds both the method and the baseline ran, the mean of the baseline and of the
    method, the mean per-seed difference (method - baseline) with its 95% t-interval, the seeds where the method
    is higher, and the two-sided p-values of a paired t-test and of a Wilcoxon signed-rank test."""
    rows = []
    for method in [m for m in metrics["method"].unique() if m != baseline]:
        for metric in RUN_METRICS:
            wide = metrics[metrics["method"].isin([baseline, method])].pivot_table(
                index="seed", columns="method", values=metric)
            if baseline not in wide or method not in wide:
                continue
            pairs = wide[[baseline, method]].dropna()
            differences = (pairs[method] - pairs[baseline]).to_numpy()
            mean, low, high = mean_interval(differences)
            t_p = wilcoxon_p = math.nan
            if len(differences) >= 2 and np.any(differences != 0):
                t_p = float(scipy_stats.ttest_1samp(differences, 0.0).pvalue)
                wilcoxon_p = float(scipy_stats.wilcoxon(differences).pvalue)
            rows.append({"comparison": f"{method} - {baseline}", "metric": metric, "seeds": len(pairs),
                         "baseline_mean": float(pairs[baseline].mean()), "method_mean": float(pairs[method].mean()),
                         "mean_difference": mean, "ci_low": low, "ci_high": high,
                         "higher": f"{int((differences > 0).sum())}/{len(differences)}",
                         "t_test_p": t_p, "wilcoxon_p": wilcoxon_p})
    return pd.DataFrame(rows, columns=["comparison", "metric", "seeds", "baseline_mean", "method_mean",
                                       "mean_difference", "ci_low", "ci_high", "higher", "t_test_p", "wilcoxon_p"])


def method_means(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method and metric: seeds, mean and 95% t-interval over seeds."""
    rows = []
    for method, group in metrics.groupby("method", sort=False):
        for metric in RUN_METRICS:
            mean, low, high = mean_interval(group[metric])
            rows.append({"method": method, "metric": metric, "seeds": int(group[metric].notna().sum()),
                         "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["method", "metric", "seeds", "mean", "ci_low", "ci_high"])
