"""Markdown tables for the reports."""

from __future__ import annotations

import math

import pandas as pd


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".3g") -> str:
    if frame.empty:
        return "(no rows)\n"
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = ""
    for _, row in frame.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) and not math.isnan(v) else str(v) for v in row]
        body += "| " + " | ".join(cells) + " |\n"
    return header + body
