"""LLD statistics with uncertainty: rates, bootstrap intervals, paired tests, rank agreement."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from ..core.lld import is_lazy, lld_rate  # noqa: F401  (the one definition, re-exported here)


def bootstrap_ci(values, statistic=np.median, *, n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): percentile bootstrap over the values (e.g. questions)."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = rng.choice(data, size=(n_resamples, data.size), replace=True)
    resampled = np.apply_along_axis(statistic, 1, samples)
    tail = (1 - confidence) / 2
    return float(statistic(data)), float(np.quantile(resampled, tail)), float(np.quantile(resampled, 1 - tail))


def paired_values(frame: pd.DataFrame, method_a: str, method_b: str, *, value: str = "delta_sum",
                  key: str = "question_id", method_column: str = "method") -> pd.DataFrame:
    """The questions measured under both methods: one row per question, columns method_a and method_b."""
    wide = frame.pivot_table(index=key, columns=method_column, values=value)
    if method_a not in wide or method_b not in wide:
        raise ValueError(f"both methods {method_a!r} and {method_b!r} must be in the frame")
    return wide[[method_a, method_b]].dropna()


def paired_wilcoxon(frame: pd.DataFrame, method_a: str, method_b: str, *, value: str = "delta_sum",
                    key: str = "question_id", method_column: str = "method") -> dict:
    """Wilcoxon signed-rank test of value(method_b) - value(method_a), paired by question."""
    pairs = paired_values(frame, method_a, method_b, value=value, key=key, method_column=method_column)
    differences = pairs[method_b] - pairs[method_a]
    if len(pairs) == 0 or (differences == 0).all():
        return {"n": len(pairs), "median_difference": float(differences.median()) if len(pairs) else math.nan,
                "statistic": math.nan, "p_value": math.nan}
    result = scipy_stats.wilcoxon(pairs[method_b], pairs[method_a])
    return {"n": len(pairs), "median_difference": float(differences.median()),
            "statistic": float(result.statistic), "p_value": float(result.pvalue)}


def paired_lld_change(frame: pd.DataFrame, method_a: str, method_b: str, *, eps: float = 0.0,
                      value: str = "delta_sum", key: str = "question_id", method_column: str = "method") -> dict:
    """How method_b changes which questions are lazy (Delta <= eps) against method_a, paired by question:
    rescued (lazy under a, not under b), newly lazy (the reverse) and the exact McNemar p-value (a
    two-sided binomial test of rescued against rescued + newly lazy; NaN when neither happens)."""
    pairs = paired_values(frame, method_a, method_b, value=value, key=key, method_column=method_column)
    lazy_a, lazy_b = is_lazy(pairs[method_a], eps), is_lazy(pairs[method_b], eps)
    rescued, newly_lazy = int(np.sum(lazy_a & ~lazy_b)), int(np.sum(~lazy_a & lazy_b))
    changed = rescued + newly_lazy
    p_value = float(scipy_stats.binomtest(rescued, changed).pvalue) if changed else math.nan
    return {"rescued": rescued, "newly_lazy": newly_lazy, "mcnemar_p": p_value}


def spearman(x, y) -> tuple[float, float]:
    """(rho, p-value) of the Spearman rank correlation, NaN pairs dropped."""
    frame = pd.DataFrame({"x": x, "y": y}).dropna()
    if len(frame) < 3:
        return math.nan, math.nan
    result = scipy_stats.spearmanr(frame["x"], frame["y"])
    return float(result.statistic), float(result.pvalue)


def top_k_overlap(scores_a, scores_b, k: int, *, descending_a: bool = True, descending_b: bool = True) -> float:
    """|top-K by a  ∩  top-K by b| / K for two scores over the same items (PAPER Table 1).
    A random ranking overlaps K/N in expectation."""
    a = pd.Series(np.asarray(scores_a, dtype=float))
    b = pd.Series(np.asarray(scores_b, dtype=float))
    if len(a) != len(b):
        raise ValueError(f"scores_a has {len(a)} items but scores_b has {len(b)}")
    if not 0 < k <= len(a):
        raise ValueError(f"k must be in 1..{len(a)}, got {k}")
    top_a = set(a.sort_values(ascending=not descending_a, kind="stable").index[:k])
    top_b = set(b.sort_values(ascending=not descending_b, kind="stable").index[:k])
    return len(top_a & top_b) / k


def table1(frame: pd.DataFrame, ks=(5, 10, 15), *, method: str = "grpo") -> pd.DataFrame:
    """Top-K overlap between ranking questions by GWHES (descending: laziest predicted first) and by
    ascending Delta(x) under `method`, next to the random baseline K/N and the first-order
    prediction's own overlap."""
    rows = frame[frame["method"] == method].dropna(subset=["gwhes", "delta_sum"])
    n = len(rows)
    out = []
    for k in ks:
        if k > n:
            continue
        out.append({"K": k, "N": n,
                    "gwhes_overlap": top_k_overlap(rows["gwhes"], rows["delta_sum"], k, descending_b=False),
                    "predicted_overlap": top_k_overlap(rows["predicted_delta"], rows["delta_sum"], k,
                                                       descending_a=False, descending_b=False),
                    "random_baseline": k / n})
    return pd.DataFrame(out, columns=["K", "N", "gwhes_overlap", "predicted_overlap", "random_baseline"])


def method_summary(frame: pd.DataFrame, *, eps: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Per method: questions, share with Delta(x) <= eps and median Delta, each with a bootstrap interval
    over the questions, fresh-sample pass rate before and after."""
    rows = []
    for method, group in frame.groupby("method", sort=False):
        median, low, high = bootstrap_ci(group["delta_sum"], seed=seed)
        share, share_low, share_high = bootstrap_ci(group["delta_sum"], lambda values: lld_rate(values, eps), seed=seed)
        rows.append({"method": method, "questions": len(group), "lld_share": share, "lld_low": share_low,
                     "lld_high": share_high, "median_delta": median, "ci_low": low, "ci_high": high,
                     "median_delta_per_token": float(group["delta_mean"].median()),
                     "mean_delta_incorrect": float(group["delta_incorrect_sum"].mean()),
                     "pass_rate_before": float(group["pass_rate_before"].mean()),
                     "pass_rate_after": float(group["pass_rate_after"].mean())})
    return pd.DataFrame(rows)
