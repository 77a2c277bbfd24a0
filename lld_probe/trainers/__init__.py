"""Reference trainers: the per-question one-step protocol and the TRL-based NTHR trainer.

The TRL classes are imported lazily (importing TRL takes seconds)."""

from .variants import VARIANTS


def __getattr__(name):
    if name in ("LLDConfig", "LLDGRPOTrainer"):
        from . import lld_trainer
        return getattr(lld_trainer, name)
    if name in ("LikelihoodProbeMixin", "ProbeSettings"):
        from . import probes
        return getattr(probes, name)
    if name in ("TrainSettings", "run_training", "run_compare", "make_trainer"):
        from . import train
        return getattr(train, name)
    raise AttributeError(name)


__all__ = ["LLDConfig", "LLDGRPOTrainer", "LikelihoodProbeMixin", "ProbeSettings", "TrainSettings", "VARIANTS",
           "make_trainer", "run_compare", "run_training"]
