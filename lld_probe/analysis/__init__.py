"""Analysis: load runs from any supported source, LLD statistics with uncertainty, paper-style figures.

    from lld_probe.analysis import load, lld_rate_by_step
    run = load("runs/my-run")            # our store, a protocol folder, a TRL output_dir or verl dumps
    lld_rate_by_step(run.responses)
"""

from .load import Run, load
from .report import write_figures, write_report
from .stats import (bootstrap_ci, is_lazy, lld_rate, method_summary, paired_lld_change, paired_wilcoxon, spearman,
                    table1, top_k_overlap)
from .training import (accuracy_curves, curve_intervals, delta_by_success_rate, final_accuracy_table,
                       lld_rate_by_step, mean_interval, probe_trajectories, response_length_by_step,
                       selected_fraction_vs_p, with_delta)

__all__ = ["Run", "accuracy_curves", "bootstrap_ci", "curve_intervals", "delta_by_success_rate",
           "final_accuracy_table", "is_lazy", "lld_rate", "lld_rate_by_step", "load", "mean_interval",
           "paired_lld_change", "paired_wilcoxon",
           "probe_trajectories", "response_length_by_step", "selected_fraction_vs_p", "spearman", "table1",
           "top_k_overlap", "method_summary", "with_delta", "write_figures", "write_report"]
