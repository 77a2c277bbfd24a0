"""One figure style for every lld_probe plot: paper-like, colour-blind safe, PNG + PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

METHOD_COLORS = {"grpo": "#4C72B0", "pos_only": "#DD8452", "random": "#55A868", "nthr": "#C44E52"}
METHOD_LABELS = {"grpo": "GRPO", "pos_only": "Pos Only", "random": "GRPO + Random", "nthr": "GRPO + NTHR"}
EXTRA_COLORS = ["#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


def apply_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.15)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 160, "axes.spines.top": False,
                         "axes.spines.right": False, "legend.frameon": False})


def color(name: str, index: int = 0) -> str:
    return METHOD_COLORS.get(name, EXTRA_COLORS[index % len(EXTRA_COLORS)])


def label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def save_figure(fig, out_dir, name: str) -> list[Path]:
    """Write name.png and name.pdf into out_dir; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return paths
