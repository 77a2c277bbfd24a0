"""The trainer extensions.

- TokenDumpRayPPOTrainer: verl's RayPPOTrainer whose rollout dump rows (trainer.rollout_data_dir) carry the token
  dump's columns (rollout_dump.py): uid, token ids, old-policy and sampler log-probs, advantages. No probes.
- LLDRayPPOTrainer: that, plus the probes and the method's advantages around `_update_actor`, the run store begun
  once verl has loaded its checkpoint (at verl's global step: a resumed run goes on in the same store), and
  verl's own tracking receiving the `lld/` metrics with the actor's; its dump rows also carry the probes' logp_before / logp_after. The actor's worker group must be LLDActorRolloutRefWorker's.
"""

from __future__ import annotations

from dataclasses import asdict

from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from ...store.provenance import provenance
from .optimizer_steps import optimizer_steps_of_config
from .rollout_dump import rollout_dump_columns
from .settings import check_verl_config, probe_settings_from_config
from .step import ProbeStep


class TokenDumpRayPPOTrainer(RayPPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rollout = self.config.actor_rollout_ref.rollout
        if self.config.trainer.get("rollout_data_dir") and rollout.get("multi_turn", {}).get("enable", False):
            raise ValueError("actor_rollout_ref.rollout.multi_turn.enable=true: the token dump of "
                             "trainer.rollout_data_dir supports single-turn responses only")

    def _log_rollout_data(self, batch, reward_extra_infos_dict, timing_raw, rollout_data_dir):
        columns = rollout_dump_columns(batch)
        return super()._log_rollout_data(batch, {**reward_extra_infos_dict, **columns}, timing_raw, rollout_data_dir)


class LLDRayPPOTrainer(TokenDumpRayPPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_verl_config(self.config)
        self.lld_settings, store_dir = probe_settings_from_config(self.config.get("lld"),
                                                                  seed=int(self.config.data.get("seed", 0) or 0))
        self.lld_store_dir = store_dir or f"{self.config.trainer.default_local_dir}/lld_store"
        self.lld_step = None
        self.lld_run_begun = False

    def init_workers(self):
        super().init_workers()
        self.lld_step = ProbeStep(self.actor_rollout_wg, group_size=int(self.config.actor_rollout_ref.rollout.n))

    def _load_checkpoint(self):
        """verl's resume (trainer.resume_mode; fit() calls it before the first step, and it sets global_steps to
        the checkpoint's step), then the run store begun at that step: a resumed run drops the store's steps
        after its checkpoint and writes them again, a new one (global step 0) refuses a store in use."""
        loaded = super()._load_checkpoint()
        self.actor_rollout_wg.lld_begin_run(asdict(self.lld_settings), self.lld_store_dir, self._lld_meta(),
                                            float(self.config.actor_rollout_ref.rollout.temperature),
                                            int(self.global_steps))
        self.lld_run_begun = True
        return loaded

    def _lld_meta(self) -> dict:
        config, settings = self.config, self.lld_settings
        return {**provenance(), "source": "verl", "method": settings.method, "probe": asdict(settings),
                "nthr_beta": settings.nthr_beta, "nthr_eta": str(settings.nthr_eta), "nthr_vocab": settings.nthr_vocab,
                "group_size": int(config.actor_rollout_ref.rollout.n),
                "temperature": float(config.actor_rollout_ref.rollout.temperature),
                "model": str(config.actor_rollout_ref.model.path), "adv_estimator": str(config.algorithm.adv_estimator),
                "learning_rate": float(config.actor_rollout_ref.actor.optim.lr),
                "ppo_epochs": int(config.actor_rollout_ref.actor.ppo_epochs),
                "ppo_mini_batch_size": int(config.actor_rollout_ref.actor.ppo_mini_batch_size),
                "balance_batch": bool(config.trainer.balance_batch),
                # each store step is one verl global step: one generation batch, this many optimizer steps
                "delta_spans_optimizer_steps": optimizer_steps_of_config(config)}

    def _update_actor(self, batch):
        if not self.lld_run_begun:
            raise RuntimeError("the run store was not begun: LLDRayPPOTrainer begins it after verl's "
                               "_load_checkpoint, which fit() calls before the first step")
        return self.lld_step.update_actor(batch, super()._update_actor, step=self.global_steps,
                                          window_steps=optimizer_steps_of_config(self.config, len(batch)))
