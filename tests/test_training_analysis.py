"""Training statistics against scipy / hand values on known data, and every training figure writes a
non-empty image."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from lld_probe.analysis import (Run, accuracy_curves, curve_intervals, delta_by_success_rate, final_accuracy_table,
                                lld_rate_by_step, mean_interval, probe_trajectories, selected_fraction_vs_p,
                                write_report)
from lld_probe.analysis.training_figures import (fig5_accuracy, fig6_length, lld_rate_over_training,
                                                 probe_trajectory_figure, selected_fraction_figure)


def _responses(seed=0, steps=4, groups=3, size=4):
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(1, steps + 1):
        for group in range(groups):
            correct = rng.random(size) < 0.5
            for index in range(size):
                before = -rng.uniform(1, 5)
                rows.append({"step": step, "group_id": f"{step}:{group}", "response_index": index,
                             "prompt": f"q{group}", "completion": "x" * int(rng.integers(3, 9)),
                             "reward": float(correct[index]), "correct": bool(correct[index]), "advantage": 0.0,
                             "n_tokens": int(rng.integers(3, 9)), "logp_before": before,
                             "logp_after": before + rng.normal(0.1, 0.3),
                             "nthr_selected_fraction": 0.0 if correct[index] else float(rng.uniform(0, 0.5)),
                             "selected_fraction": 0.0})
    return pd.DataFrame(rows)


def _run(method, seed, path="run"):
    scalars = pd.DataFrame({"step": [0, 2, 4], "name": "eval/accuracy", "value": [0.3, 0.35 + 0.01 * seed, 0.4]})
    probe_set = pd.DataFrame({"step": np.repeat([0, 2, 4], 4), "probe_id": np.tile(range(4), 3),
                              "kind": np.tile(["correct", "correct", "near_miss", "near_miss"], 3),
                              "logp": np.arange(12, dtype=float) * np.tile([1, 1, -1, -1], 3)})
    return Run("store", Path(f"{path}-{method}-{seed}"), _responses(seed), {"method": method, "settings": {"seed": seed}},
               scalars, probe_set=probe_set)


def test_lld_rate_by_step_by_hand():
    frame = pd.DataFrame({"step": [1, 1, 1, 1, 2, 2], "group_id": ["a", "a", "a", "a", "b", "b"],
                          "correct": [True, True, False, True, True, False],
                          "logp_before": [-1.0, -2.0, -3.0, -1.0, -1.0, -1.0],
                          "logp_after": [-0.5, -2.5, -3.5, -1.0, math.nan, -2.0]})
    result = lld_rate_by_step(frame).set_index("step")
    assert result.loc[1, "lld_rate"] == pytest.approx(2 / 3)           # -0.5 and 0.0 count (<= 0), +0.5 not
    assert result.loc[1, "delta_correct"] == pytest.approx((0.5 - 0.5 + 0.0) / 3)
    assert result.loc[1, "delta_incorrect"] == pytest.approx(-0.5)
    assert math.isnan(result.loc[2, "lld_rate"])                       # the only correct one was not measured


def test_mean_interval_matches_scipy():
    values = [0.31, 0.42, 0.38, 0.35]
    mean, low, high = mean_interval(values)
    expected = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert (low, high) == pytest.approx(expected, abs=1e-12)
    assert mean == pytest.approx(np.mean(values))
    assert math.isnan(mean_interval([0.5])[1])


def test_accuracy_curves_and_final_table():
    runs = [_run("grpo", s) for s in range(3)] + [_run("nthr", s) for s in range(3)]
    curves = accuracy_curves(runs)
    assert len(curves) == 18
    intervals = curve_intervals(curves)
    row = intervals[(intervals["method"] == "grpo") & (intervals["step"] == 2)].iloc[0]
    assert row["mean"] == pytest.approx(0.36) and row["n"] == 3
    table = final_accuracy_table(curves).set_index("method")
    assert table.loc["nthr", "change"] == pytest.approx(0.1)


def test_delta_and_selected_fraction_by_p():
    responses = _responses(3)
    by_p = delta_by_success_rate(responses)
    assert ((by_p["p"] > 0) & (by_p["p"] < 1)).all()
    manual = responses.assign(p=responses.groupby("group_id")["correct"].transform("mean"),
                              delta=responses["logp_after"] - responses["logp_before"])
    for _, row in by_p.iterrows():
        subset = manual[(manual["p"] == row["p"]) & manual["correct"]]
        assert row["median_delta"] == pytest.approx(subset["delta"].median())
    fractions = selected_fraction_vs_p(responses)
    assert (fractions["selected_fraction"] <= 0.5).all()


def test_non_binary_correctness_is_refused():
    responses = _responses(0)
    responses["correct"] = pd.Series(pd.NA, index=responses.index, dtype="boolean")
    with pytest.raises(ValueError, match="binary"):
        lld_rate_by_step(responses)


def test_probe_trajectories_are_changes_since_start():
    summary = probe_trajectories(_run("grpo", 0).probe_set)
    start = summary[summary["step"] == 0]
    assert (start["median"] == 0).all()
    last = summary[(summary["step"] == 4) & (summary["kind"] == "correct")].iloc[0]
    assert last["median"] == pytest.approx(8.0)


@pytest.mark.integration
def test_every_training_figure_writes_a_non_empty_image(tmp_path):
    runs = [_run(m, s) for m in ("grpo", "nthr", "pos_only") for s in range(2)]
    written = []
    written += fig5_accuracy(runs, tmp_path)
    written += fig6_length(runs, tmp_path)
    written += lld_rate_over_training(runs, tmp_path)
    written += selected_fraction_figure(runs, tmp_path)
    written += probe_trajectory_figure(runs[0], tmp_path)
    assert len(written) == 10
    for path in written:
        assert path.stat().st_size > 1000, path


@pytest.mark.integration
def test_report_lists_its_figures(tmp_path):
    runs = [_run(m, s) for m in ("grpo", "nthr") for s in range(2)]
    summary = write_report(runs, tmp_path)
    text = summary.read_text()
    assert "Held-out greedy accuracy" in text and "lld_rate" in text
    for line in text.splitlines():
        if line.startswith("!["):
            assert (tmp_path / line.split("(")[1].rstrip(")")).is_file()
