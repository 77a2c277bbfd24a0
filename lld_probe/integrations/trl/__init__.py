"""lld_probe on TRL: LLDConfig + LLDGRPOTrainer (the NTHR reference trainer), LikelihoodProbeMixin for
your own GRPOTrainer subclass, and runs from names (TrainSettings, run_training, run_compare). TRL is
imported on first use (it takes seconds)."""

_EXPORTS = {
    "LLDConfig": "config", "LLDGRPOTrainer": "trainer", "LikelihoodProbeMixin": "adapter",
"TrainSettings": "run", "run_training": "run",
    "run_compare": "run", "make_trainer": "run", "build_dataset": "run", "reward_function": "run",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)


__all__ = sorted(_EXPORTS)
