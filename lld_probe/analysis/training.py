"""Statistics over training runs (loaded with lld_probe.analysis.load): LLD rate and Delta by step and
by group success rate p, accuracy curves with intervals across seeds, selected fraction vs p,
response length over training, probe-set trajectories."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..core.lld import lld_rate


def _require_correct(responses: pd.DataFrame, what: str) -> pd.Series:
    if "correct" not in responses or responses["correct"].isna().any():
        raise ValueError(f"{what} needs binary correctness: rewards are not binary; load(path, correct_threshold=...)")
    return responses["correct"].astype(bool)


def with_delta(responses: pd.DataFrame) -> pd.DataFrame:
    """Adds delta = logp_after - logp_before (PAPER: Delta(x), sequence log-likelihood change) and the
    group success rate p."""
    missing = [c for c in ("logp_before", "logp_after") if c not in responses.columns]
    if missing:
        raise ValueError(f"Delta needs columns {missing}: this log has no likelihood probes "
                         "(train with LLDGRPOTrainer or the LikelihoodProbeMixin)")
    frame = responses.copy()
    frame["correct"] = _require_correct(frame, "Delta by correctness")
    frame["delta"] = frame["logp_after"].astype(float) - frame["logp_before"].astype(float)
    frame["p"] = frame.groupby("group_id")["correct"].transform("mean")
    return frame


def lld_rate_by_step(responses: pd.DataFrame, *, eps: float = 0.0) -> pd.DataFrame:
    """Per step: share of measured correct responses with Delta <= eps (the LLD rate), their mean Delta,
    the mean Delta of incorrect responses, and n_left_out: correct responses without a measured Delta
    (truncated and masked, or not re-scored), which no rate includes."""
    everything = with_delta(responses)
    left_out = everything[everything["delta"].isna() & everything["correct"]].groupby("step").size()
    frame = everything[~everything["delta"].isna()]
    rows = []
    for step, group in frame.groupby("step"):
        correct = group[group["correct"]]
        incorrect = group[~group["correct"]]
        rows.append({"step": int(step), "lld_rate": lld_rate(correct["delta"], eps),
                     "delta_correct": float(correct["delta"].mean()) if len(correct) else math.nan,
                     "delta_incorrect": float(incorrect["delta"].mean()) if len(incorrect) else math.nan,
                     "n_correct": len(correct), "n_left_out": int(left_out.get(step, 0))})
    return pd.DataFrame(rows, columns=["step", "lld_rate", "delta_correct", "delta_incorrect", "n_correct",
                                       "n_left_out"])


def delta_by_success_rate(responses: pd.DataFrame) -> pd.DataFrame:
    """Delta of correct responses per group success rate p (mixed groups only): n, median, IQR, LLD rate."""
    frame = with_delta(responses)
    frame = frame[frame["correct"] & (frame["p"] > 0) & (frame["p"] < 1) & ~frame["delta"].isna()]
    rows = []
    for p, group in frame.groupby("p"):
        rows.append({"p": float(p), "n": len(group), "median_delta": float(group["delta"].median()),
                     "q25": float(group["delta"].quantile(0.25)), "q75": float(group["delta"].quantile(0.75)),
                     "lld_rate": lld_rate(group["delta"])})
    return pd.DataFrame(rows, columns=["p", "n", "median_delta", "q25", "q75", "lld_rate"])


def selected_fraction_vs_p(responses: pd.DataFrame, column: str = "nthr_selected_fraction") -> pd.DataFrame:
    """Mean share of an incorrect response's tokens that NTHR selects, per group success rate p."""
    if column not in responses.columns:
        column = "scaled_fraction"
    frame = responses.copy()
    frame["correct"] = _require_correct(frame, "selected fraction vs p")
    frame["p"] = frame.groupby("group_id")["correct"].transform("mean")
    frame = frame[~frame["correct"] & (frame["p"] > 0)]
    summary = frame.groupby("p")[column].agg(["mean", "count"]).reset_index()
    return summary.rename(columns={"mean": "selected_fraction", "count": "n"})


def response_length_by_step(responses: pd.DataFrame, unit: str = "tokens") -> pd.DataFrame:
    """Mean response length per step (PAPER Fig 6), in tokens when the log has them, else characters."""
    frame = responses.copy()
    if unit == "tokens" and "n_tokens" in frame.columns:
        frame["length"] = frame["n_tokens"]
    else:
        frame["length"] = frame["completion"].astype(str).str.len()
    return frame.groupby("step")["length"].mean().reset_index()


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean across seeds (a single value: no interval)."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, mean - half, mean + half


def accuracy_curves(runs, metric: str = "eval/accuracy") -> pd.DataFrame:
    """Long frame method, seed, run, step, accuracy from each run's logged metric."""
    rows = []
    for run in runs:
        curve = run.scalar(metric)
        settings = run.meta.get("settings", {})
        for step, value in zip(curve["step"], curve["value"]):
            rows.append({"method": run.method, "seed": settings.get("seed", run.meta.get("seed")),
                         "run": run.name, "step": int(step), "accuracy": float(value)})
    return pd.DataFrame(rows, columns=["method", "seed", "run", "step", "accuracy"])


def curve_intervals(curves: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """Per method and step: mean and 95% t-interval across seeds."""
    rows = []
    for (method, step), group in curves.groupby(["method", "step"]):
        mean, low, high = mean_interval(group[value])
        rows.append({"method": method, "step": int(step), "mean": mean, "low": low, "high": high, "n": len(group)})
    return pd.DataFrame(rows, columns=["method", "step", "mean", "low", "high", "n"])


def final_accuracy_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method: accuracy at the first and last evaluated step, mean [95% interval] across seeds."""
    rows = []
    for method, group in curves.groupby("method"):
        first, last = group["step"].min(), group["step"].max()
        start = mean_interval(group[group["step"] == first]["accuracy"])
        end = mean_interval(group[group["step"] == last]["accuracy"])
        gain = group[group["step"] == last].set_index("seed")["accuracy"] - \
            group[group["step"] == first].set_index("seed")["accuracy"]
        change = mean_interval(gain)
        rows.append({"method": method, "seeds": group["seed"].nunique(), "first_step": int(first),
                     "acc_first": start[0], "last_step": int(last), "acc_last": end[0], "acc_last_low": end[1],
                     "acc_last_high": end[2], "change": change[0], "change_low": change[1], "change_high": change[2]})
    return pd.DataFrame(rows)


def probe_trajectories(probe_set: pd.DataFrame) -> pd.DataFrame:
    """Per kind (correct / near_miss) and step: median and interquartile range of the change of each
    probe response's log-likelihood since step 0."""
    if probe_set.empty:
        return pd.DataFrame(columns=["kind", "step", "median", "q25", "q75", "n"])
    frame = probe_set.copy()
    start = frame[frame["step"] == frame["step"].min()].set_index("probe_id")["logp"]
    frame["change"] = frame["logp"] - frame["probe_id"].map(start)
    summary = frame.groupby(["kind", "step"])["change"].agg(
        median="median", q25=lambda x: x.quantile(0.25), q75=lambda x: x.quantile(0.75), n="count")
    return summary.reset_index()
