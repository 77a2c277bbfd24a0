"""lld_probe on verl (0.9.x, engine workers): the probes and the four methods with no change to verl.

- EngineProbes (engine_probes.py): what runs on every data-parallel rank of the actor: the old policy's
  hidden states captured inside verl's infer_batch, the recorder's NTHR scoring and advantages, the re-score
  after the update through the same engine, this rank's shard of the run store.
- LLDActorRolloutRefWorker (worker.py): verl's ActorRolloutRefWorker with the three calls the driver makes.
- ProbeStep (step.py) and LLDRayPPOTrainer (trainer.py): the driver side around update_actor.
verl is imported on first use; the modules layout.py and settings.py need no verl.
"""

_EXPORTS = {
    "EngineProbes": "engine_probes", "LLDActorRolloutRefWorker": "worker", "ProbeStep": "step",
    "LLDRayPPOTrainer": "trainer", "probe_settings_from_config": "settings",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)


__all__ = sorted(_EXPORTS)
