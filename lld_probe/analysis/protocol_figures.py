"""Figures of the per-question protocol: Fig 1, Fig 4, Fig 3 (token heat map), predicted vs measured,
LLD against the group's success rate and against response length."""

from __future__ import annotations

import html
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import colors as mcolors

from ..core.lld import lld_count
from .stats import spearman
from .style import apply_style, color, label, save_figure


def delta_bars(protocol: pd.DataFrame, methods, out_dir, name: str, *, title: str = "") -> list:
    """Bars of Delta(x) per question, questions sorted by GRPO's Delta (PAPER Fig 1 / Fig 4)."""
    apply_style()
    methods = [m for m in methods if m in set(protocol["method"])]
    if "grpo" not in methods:
        raise ValueError("delta bars need the grpo method (questions are sorted by its Delta)")
    wide = protocol.pivot_table(index="question_id", columns="method", values="delta_sum")
    order = wide["grpo"].sort_values().index
    n = len(order)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.28 * n + 2)), 3.6))    # many questions: thinner bars
    x = np.arange(n)
    for index, method in enumerate(methods):
        ax.bar(x + (index - (len(methods) - 1) / 2) * width, wide.loc[order, method], width,
               color=color(method), label=label(method), linewidth=0)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("question (sorted by GRPO's Δ(x))")
    ax.set_ylabel("Δ(x): change of log π(y⁺|x)")
    step = math.ceil(n / 50)                                                      # at most 50 tick labels
    ax.set_xticks(x[::step])
    ax.set_xticklabels([str(i + 1) for i in range(0, n, step)], fontsize=7)
    ax.set_xlim(-0.6, n - 0.4)
    lazy, _ = lld_count(wide.loc[order, "grpo"])
    ax.set_title(title or f"Likelihood change of correct responses after one update ({lazy}/{n} questions with Δ ≤ 0 under GRPO)",
                 fontsize=10)
    ax.legend(ncol=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.2))   # below the axes: never over bars
    return save_figure(fig, out_dir, name)


def fig1(protocol, out_dir, **kwargs):
    return delta_bars(protocol, ["grpo", "pos_only"], out_dir, "fig1_delta_grpo_vs_pos_only", **kwargs)


def fig4(protocol, out_dir, **kwargs):
    return delta_bars(protocol, ["grpo", "random", "nthr"], out_dir, "fig4_delta_grpo_random_nthr", **kwargs)


def predicted_vs_measured(protocol: pd.DataFrame, out_dir, name: str = "predicted_vs_measured") -> list:
    """First-order prediction (unembedding-only gradient flow) against the measured Delta(x)."""
    apply_style()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    texts = []
    for index, (method, group) in enumerate(protocol.groupby("method", sort=False)):
        ax.scatter(group["predicted_delta"], group["delta_sum"], s=22, alpha=0.8, color=color(method, index),
                   label=label(method))
        rho, _ = spearman(group["predicted_delta"], group["delta_sum"])
        texts.append(f"{label(method)} ρ={rho:.2f}")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("predicted Δ(x) (first order, unembedding only)")
    ax.set_ylabel("measured Δ(x)")
    ax.set_title("Spearman: " + ", ".join(texts), fontsize=8)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, name)


def laziest_question(protocol: pd.DataFrame) -> str:
    grpo = protocol[protocol["method"] == "grpo"]
    if grpo.empty:
        raise ValueError("no grpo rows: the laziest question is defined by GRPO's Delta")
    return str(grpo.sort_values("delta_sum").iloc[0]["question_id"])


def _token_colormap(scores: pd.Series):
    limit = float(np.nanmax(np.abs(scores))) if len(scores) else 1.0
    return plt.get_cmap("RdBu_r"), mcolors.Normalize(vmin=-limit or -1, vmax=limit or 1)


def _display(token: str) -> str:
    return token.replace("\n", "⏎").replace(" ", "␣") if token.strip() == "" else token.replace("\n", "⏎")


def token_heatmap(tokens: pd.DataFrame, question_id: str, out_dir, name: str = "fig3_token_scores",
                  *, wrap: int = 48, max_responses: int = 8, title: str | None = None) -> list:
    """Incorrect responses of one question, tokens coloured by NTHR score, selected ones boxed
    (PAPER Fig 3). Also writes name.html. Returns the written paths."""
    apply_style()
    rows = tokens[(tokens["question_id"] == question_id) & (~tokens["correct"])]
    if rows.empty:
        raise ValueError(f"question {question_id!r} has no incorrect response tokens")
    cmap, norm = _token_colormap(rows["nthr_score"])
    responses = list(rows.groupby("response_index"))[:max_responses]
    lines = []
    for index, frame in responses:
        frame = frame.sort_values("position")
        items = list(zip(frame["token"], frame["nthr_score"], frame["nthr_selected"]))
        for start in range(0, len(items), wrap):
            lines.append((index if start == 0 else None, items[start:start + wrap]))
    char_width = 0.105
    widest = max(sum(max(1, len(_display(t))) for t, _, _ in items) for _, items in lines)
    fig, ax = plt.subplots(figsize=(min(18, 1.2 + widest * char_width), 0.42 * len(lines) + 1.0))
    ax.set_xlim(0, widest + 6)
    ax.set_ylim(len(lines), -0.6)
    ax.axis("off")
    for line_index, (response, items) in enumerate(lines):
        if response is not None:
            ax.text(0, line_index + 0.5, f"#{response}", fontsize=8, va="center", family="monospace")
        x = 4.0
        for token, score, selected in items:
            shown = _display(token)
            span = max(1, len(shown))
            ax.add_patch(plt.Rectangle((x, line_index + 0.1), span, 0.8, facecolor=cmap(norm(score)),
                                       edgecolor="black" if selected else "none", linewidth=1.2 if selected else 0))
            ax.text(x + span / 2, line_index + 0.5, shown, fontsize=8, ha="center", va="center", family="monospace")
            x += span
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02, label="NTHR score (boxed: selected)")
    ax.set_title(title or f"Incorrect responses of the laziest question {question_id!r}", fontsize=10)
    paths = save_figure(fig, out_dir, name)
    html_path = paths[0].with_suffix(".html")
    html_path.write_text(token_heatmap_html(rows, question_id, cmap, norm), encoding="utf-8")
    return paths + [html_path]


def token_heatmap_html(rows: pd.DataFrame, question_id: str, cmap=None, norm=None) -> str:
    if cmap is None:
        cmap, norm = _token_colormap(rows["nthr_score"])
    parts = [f"<html><head><meta charset='utf-8'><title>NTHR scores: {html.escape(question_id)}</title>",
             "<style>body{font-family:monospace} span{padding:1px 0} .sel{outline:2px solid black}</style></head><body>",
             f"<h3>Incorrect responses of {html.escape(question_id)}: background = NTHR score (red high, blue low), "
             "outlined = selected</h3>"]
    for index, frame in rows.groupby("response_index"):
        parts.append(f"<p><b>#{index}</b> ")
        for _, token in frame.sort_values("position").iterrows():
            background = mcolors.to_hex(cmap(norm(token["nthr_score"])))
            css = " class='sel'" if token["nthr_selected"] else ""
            text = html.escape(token["token"]).replace("\n", "⏎<br>")
            parts.append(f"<span{css} style='background:{background}' title='{token['nthr_score']:.4g}'>{text}</span>")
        parts.append("</p>")
    parts.append("</body></html>")
    return "".join(parts)


def protocol_figures(protocol: pd.DataFrame, tokens: pd.DataFrame, out_dir, responses: pd.DataFrame | None = None) -> list:
    """Every protocol figure that the methods present allow (with `responses`: also LLD against length)."""
    from .lld_breakdown import lld_by_length, lld_by_nthr_selection, lld_by_success_rate
    written = []
    present = set(protocol["method"])
    if {"grpo", "pos_only"} <= present:
        written += fig1(protocol, out_dir)
    if {"grpo", "random", "nthr"} <= present or {"grpo", "nthr"} <= present:
        written += delta_bars(protocol, ["grpo", "random", "nthr"], out_dir, "fig4_delta_grpo_random_nthr")
    if protocol["predicted_delta"].notna().any():
        written += predicted_vs_measured(protocol, out_dir)
    if "grpo" in present and not tokens.empty:
        question = laziest_question(protocol)
        if not tokens[(tokens["question_id"] == question) & (~tokens["correct"])].empty:
            written += token_heatmap(tokens, question, out_dir)
    written += lld_breakdown_figure(lld_by_success_rate(protocol), out_dir, "lld_vs_success_rate",
                                    xlabel="group success rate p", unit="questions")
    by_selection = lld_by_nthr_selection(protocol)
    if not by_selection.empty:
        written += lld_breakdown_figure(by_selection, out_dir, "lld_vs_nthr_selection",
                                        xlabel="NTHR's share of the incorrect tokens", unit="questions")
    if responses is not None and not responses.empty:
        by_length = lld_by_length(responses)
        if not by_length.empty:
            written += lld_breakdown_figure(by_length, out_dir, "lld_vs_length",
                                            xlabel="length of the correct response", unit="responses")
    return written


def lld_breakdown_figure(table: pd.DataFrame, out_dir, name: str, *, xlabel: str, unit: str) -> list:
    """Two panels over the bins of `table` (lld_breakdown.lld_by_success_rate / _by_length / _by_nthr_selection): the LLD
    share and the median Delta per method, with their bootstrap 95% intervals."""
    apply_style()
    if table.empty:
        raise ValueError("the breakdown table is empty: nothing to plot")
    bins = list(dict.fromkeys(table["bin"]))
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(methods)
    for index, method in enumerate(methods):
        rows = table[table["method"] == method].set_index("bin").reindex(bins)
        x = np.arange(len(bins)) + (index - (len(methods) - 1) / 2) * width
        for ax, (value, low, high) in zip(axes, (("lld_share", "lld_low", "lld_high"),
                                                 ("median_delta", "median_low", "median_high"))):
            errors = np.vstack([rows[value] - rows[low], rows[high] - rows[value]]).clip(min=0)
            ax.errorbar(x, rows[value], yerr=errors, fmt="o", color=color(method, index), label=label(method),
                        capsize=3, markersize=5)
    for ax in axes:
        ax.set_xlim(-0.6, len(bins) - 0.4)                 # one bin: the methods stay side by side
        ax.set_xticks(np.arange(len(bins)))
        counts = table.groupby("bin", sort=False)["n"].max().reindex(bins)
        ax.set_xticklabels([f"{b}\n(n={int(n)} {unit})" for b, n in zip(bins, counts)], fontsize=8)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("LLD share (Δ ≤ 0)")
    axes[0].set_ylim(-0.03, 1.03)
    axes[1].set_ylabel("median Δ")
    axes[1].axhline(0, color="black", linewidth=0.8)
    axes[0].legend(ncol=len(methods), loc="upper center", bbox_to_anchor=(1.1, -0.28), fontsize=8)
    fig.suptitle("Where LLD lives (bootstrap 95% intervals)", fontsize=10)
    return save_figure(fig, out_dir, name)
