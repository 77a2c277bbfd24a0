"""The LLD criterion and rate: the one definition every statistic, metric and figure uses."""

from __future__ import annotations

import math

import numpy as np


def is_lazy(delta, eps: float = 0.0) -> np.ndarray:
    """Per entry: Delta <= eps (PAPER: LLD holds when log pi_final(y+) < log pi_init(y+) + eps); False for
    NaN (not measured)."""
    values = np.asarray(delta, dtype=float)
    return ~np.isnan(values) & (np.nan_to_num(values, nan=np.inf) <= eps)


def lld_rate(delta, eps: float = 0.0) -> float:
    """Share of correct responses (or questions) whose Delta <= eps (is_lazy), NaN entries (not measured)
    left out; NaN when nothing was measured."""
    values = np.asarray(delta, dtype=float)
    values = values[~np.isnan(values)]
    return float(np.mean(is_lazy(values, eps))) if values.size else math.nan


def lld_count(delta, eps: float = 0.0) -> tuple[int, int]:
    """(responses with Delta <= eps, responses measured): the rate's numerator and denominator, for
    rates pooled across processes or files."""
    values = np.asarray(delta, dtype=float)
    values = values[~np.isnan(values)]
    return int(np.sum(is_lazy(values, eps))), int(values.size)
