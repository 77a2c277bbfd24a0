"""Figures of training runs: Fig 5 (accuracy vs step per method, band across seeds), Fig 6 (response
length over training), LLD rate over training, probe-set trajectories, selected fraction vs p."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
import pandas as pd

from .style import apply_style, color, label, save_figure
from .training import (accuracy_curves, curve_intervals, lld_rate_by_step, probe_trajectories,
                       response_length_by_step, selected_fraction_vs_p)


def _methods(runs) -> list[str]:
    return list(dict.fromkeys(run.method for run in runs))


def _band(ax, frame, method, index, ylabel_value="mean"):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))      # steps are whole numbers
    frame = frame.sort_values("step")
    ax.plot(frame["step"], frame[ylabel_value], marker="o", markersize=3, color=color(method, index),
            label=label(method))
    if frame["low"].notna().any():
        ax.fill_between(frame["step"], frame["low"], frame["high"], color=color(method, index), alpha=0.18,
                        linewidth=0)


def fig5_accuracy(runs, out_dir, name: str = "fig5_accuracy") -> list:
    """Held-out greedy accuracy vs step, mean and 95% interval across seeds per method (PAPER Fig 5)."""
    curves = accuracy_curves(runs)
    if curves.empty:
        raise ValueError("no eval/accuracy logged in these runs (train with --eval-every)")
    intervals = curve_intervals(curves)
    apply_style()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for index, method in enumerate(_methods(runs)):
        _band(ax, intervals[intervals["method"] == method], method, index)
    seeds = curves.groupby("method")["seed"].nunique().max()
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out greedy accuracy")
    spread = f"mean, 95% interval over {seeds} seeds" if seeds > 1 else "one seed: no interval"
    ax.set_title(f"Accuracy during training ({spread})", fontsize=10)
    ax.legend()
    return save_figure(fig, out_dir, name)


def _per_run_lines(runs, out_dir, name, compute, value, ylabel, title, *, zero_line=False, rate=False) -> list:
    apply_style()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    methods = _methods(runs)
    frames = []
    for run in runs:
        frame = compute(run)
        frame["method"] = run.method
        frame["run"] = run.name
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    for index, method in enumerate(methods):
        group = data[data["method"] == method]
        per_step = group.groupby("step")[value]
        summary = pd.DataFrame({"mean": per_step.mean(), "low": per_step.min(), "high": per_step.max()}).reset_index()
        if group["run"].nunique() < 2:
            summary[["low", "high"]] = np.nan
        _band(ax, summary, method, index)
    if zero_line:
        ax.axhline(0, color="black", linewidth=0.8)
    if rate:       # a share: keep 0 at the bottom of the axis
        ax.set_ylim(-0.02, max(0.25, float(data[value].max()) + 0.05 if data[value].notna().any() else 0.25))
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend()
    return save_figure(fig, out_dir, name)


def lld_rate_over_training(runs, out_dir, name: str = "lld_rate_over_training", window: int = 5) -> list:
    """Share of correct responses whose likelihood did not rise in the update (rolling mean over
    `window` steps; band: min-max over seeds)."""
    def compute(run):
        frame = lld_rate_by_step(run.responses)
        frame["lld_rate"] = frame["lld_rate"].rolling(window, min_periods=1).mean()
        return frame
    return _per_run_lines(runs, out_dir, name, compute, "lld_rate", "LLD rate (correct responses with Δ ≤ 0)",
                          f"Lazy likelihood displacement during training ({window}-step rolling mean)", rate=True)


def delta_correct_over_training(runs, out_dir, name: str = "delta_correct_over_training", window: int = 5) -> list:
    """Mean Delta of the correct responses in each update (rolling mean over `window` steps; band: min-max
    over seeds)."""
    def compute(run):
        frame = lld_rate_by_step(run.responses)
        frame["delta_correct"] = frame["delta_correct"].rolling(window, min_periods=1).mean()
        return frame
    return _per_run_lines(runs, out_dir, name, compute, "delta_correct", "mean Δ of correct responses (nats)",
                          f"Likelihood change of correct responses per update ({window}-step rolling mean)",
                          zero_line=True)


def fig6_length(runs, out_dir, name: str = "fig6_response_length") -> list:
    """Mean response length per step (PAPER Fig 6; band: min-max over seeds)."""
    unit = "tokens" if all("n_tokens" in run.responses.columns for run in runs) else "characters"
    return _per_run_lines(runs, out_dir, name, lambda run: response_length_by_step(run.responses, unit), "length",
                          f"mean response length ({unit})", "Response length during training")


def probe_trajectory_figure(run, out_dir, name: str = "probe_trajectories") -> list:
    """Change of the probe set's log-likelihoods since the start: median and interquartile band for
    correct responses and near misses (incorrect responses of mixed groups)."""
    summary = probe_trajectories(run.probe_set)
    if summary.empty:
        raise ValueError(f"{run.path}: no probe set recorded")
    apply_style()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for index, (kind, color_value) in enumerate((("correct", "#4C72B0"), ("near_miss", "#C44E52"))):
        frame = summary[summary["kind"] == kind].sort_values("step")
        if frame.empty:
            continue
        ax.plot(frame["step"], frame["median"], marker="o", markersize=3, color=color_value,
                label=f"{kind.replace('_', ' ')} (n={int(frame['n'].max())})")
        ax.fill_between(frame["step"], frame["q25"], frame["q75"], color=color_value, alpha=0.18, linewidth=0)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel("log π(y|x) − log π₀(y|x)")
    ax.set_title(f"Probe-set likelihood trajectories ({label(run.method)})", fontsize=10)
    ax.legend()
    return save_figure(fig, out_dir, name)


def selected_fraction_figure(runs, out_dir, name: str = "selected_fraction_vs_p") -> list:
    """Share of an incorrect response's tokens NTHR selects, against the group's success rate p."""
    apply_style()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    frames = []
    for run in runs:
        frame = selected_fraction_vs_p(run.responses)
        frame["method"] = run.method
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    for index, method in enumerate(_methods(runs)):
        group = data[data["method"] == method].groupby("p")["selected_fraction"].mean().reset_index()
        ax.plot(group["p"], group["selected_fraction"], marker="o", color=color(method, index), label=label(method))
    ax.set_xlabel("group success rate p")
    ax.set_ylabel("NTHR-selected share of tokens")
    ax.set_title("Tokens of incorrect responses selected by NTHR", fontsize=10)
    ax.legend()
    return save_figure(fig, out_dir, name)


def training_figures(runs, out_dir) -> list:
    """Every training figure these runs support; returns the written paths."""
    written = []
    has_probes = [run for run in runs if "logp_after" in run.responses.columns and run.responses["logp_after"].notna().any()]
    if any(not run.scalar("eval/accuracy").empty for run in runs):
        written += fig5_accuracy(runs, out_dir)
    if any(len(run.responses) for run in runs):
        written += fig6_length(runs, out_dir)
    if has_probes:
        written += lld_rate_over_training(has_probes, out_dir)
        written += delta_correct_over_training(has_probes, out_dir)
        written += selected_fraction_figure(has_probes, out_dir)
    for run in runs:
        if len(run.probe_set):
            written += probe_trajectory_figure(run, out_dir, f"probe_trajectories_{run.name}")
    return written
