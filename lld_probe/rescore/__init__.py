"""Likelihood dynamics of a run trained without the probes, re-scored from its logged responses and its
checkpoints into an ordinary run store (docs/rescore.md).

    from lld_probe.rescore import rescore
    summary = rescore("runs/trl-output-dir", "runs/rescored", initial_model="Qwen/Qwen2.5-0.5B-Instruct")
    print(summary.line())
"""

from .runner import RescoreSettings, RescoreSummary, rescore
from .windows import Window, plan_windows

__all__ = ["RescoreSettings", "RescoreSummary", "Window", "plan_windows", "rescore"]
