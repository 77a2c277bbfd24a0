"""The worker extension: verl's ActorRolloutRefWorker with the probes' three calls, registered with verl's
own dispatch so that the driver calls them on the actor's worker group like compute_log_prob:

    lld_begin_run(settings, store_dir, meta, temperature, resumed_step)
                                                             every rank: an EngineProbes on its actor engine,
                                                             the run store begun (resumed after verl's checkpoint)
    lld_score_old_policy(data)                               data split over the data-parallel ranks as verl
                                                             splits compute_log_prob's; returns lld_advantages
    lld_finish_step(scalars)                                 every rank: logp_after, the store; returns the
                                                             metrics and this rank's rows' logp_before/after

Select it in a verl launch through lld_probe.integrations.verl.main (or map Role.ActorRollout to
ray.remote(LLDActorRolloutRefWorker) in your own task runner).
"""

from __future__ import annotations

from dataclasses import asdict

from verl.single_controller.base.decorator import Dispatch, make_nd_compute_dataproto_dispatch_fn, register
from verl.workers.engine_workers import ActorRolloutRefWorker

from ...probes import ProbeSettings
from .engine_probes import EngineProbes


class LLDActorRolloutRefWorker(ActorRolloutRefWorker):

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def lld_begin_run(self, settings: dict, store_dir: str, meta: dict, temperature: float, resumed_step: int = 0):
        if self.actor is None:
            raise RuntimeError("lld_begin_run on a worker without the actor role")
        tokenizer = getattr(self.actor.model_config, "tokenizer", None)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.lld = EngineProbes(self.actor, ProbeSettings(**settings), store_dir, temperature=temperature,
                                tokenizer=tokenizer, pad_id=pad if pad is not None else 0)
        self.lld.begin_run(meta, resumed_step=resumed_step)
        return asdict(self.lld.recorder.settings)

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def lld_score_old_policy(self, data):
        return self.lld.score_old_policy(data).cpu()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def lld_finish_step(self, scalars: dict):
        metrics = self.lld.finish_step(scalars)
        return {"metrics": metrics, "rows": self.lld.step_rows()}
