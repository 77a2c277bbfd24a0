"""Deprecated: the former home of the trainers. Use lld_probe.integrations.trl (LLDConfig, LLDGRPOTrainer,
LikelihoodProbeMixin, TrainSettings, run_training, run_compare, make_trainer), lld_probe.probes
(ProbeSettings), lld_probe.protocol (the per-question protocol) and lld_probe.core (VARIANTS)."""

import importlib
import warnings

_MOVED = {
    "LLDConfig": "lld_probe.integrations.trl.config", "LLDGRPOTrainer": "lld_probe.integrations.trl.trainer",
    "LikelihoodProbeMixin": "lld_probe.integrations.trl.adapter", "ProbeSettings": "lld_probe.probes.settings",
    "TrainSettings": "lld_probe.integrations.trl.run", "run_training": "lld_probe.integrations.trl.run",
    "run_compare": "lld_probe.integrations.trl.run", "make_trainer": "lld_probe.integrations.trl.run",
    "VARIANTS": "lld_probe.core.variants",
}


def __getattr__(name):
    if name in _MOVED:
        warnings.warn(f"lld_probe.trainers.{name} moved to {_MOVED[name]}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(name)
