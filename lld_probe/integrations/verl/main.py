"""A verl GRPO launch with the probes: verl's own Hydra config (ppo_trainer) plus an `lld` block.

    python -m lld_probe.integrations.verl.main trainer.use_v1=false algorithm.adv_estimator=grpo \\
        actor_rollout_ref.rollout.n=8 ... +lld.method=nthr +lld.nthr_beta=1

It runs verl's legacy task runner (verl.trainer.main_ppo_v0, the RayPPOTrainer loop) with two classes swapped
in the task runner's own process: the actor worker (LLDActorRolloutRefWorker) and the trainer
(LLDRayPPOTrainer). Settings the probes cannot follow are refused here, before Ray starts. With +lld.probes=false
only the trainer is swapped, for TokenDumpRayPPOTrainer (the rollout token dump; verl's own worker, no probes).
"""

from __future__ import annotations

from pathlib import Path


def _task_runner(probes: bool = True):
    import ray
    import verl.trainer.main_ppo_v0 as legacy
    from verl.trainer.ppo.ray_trainer import Role

    from .trainer import LLDRayPPOTrainer, TokenDumpRayPPOTrainer
    from .worker import LLDActorRolloutRefWorker

    class LLDTaskRunner(legacy.TaskRunner.__ray_metadata__.modified_class):
        def add_actor_rollout_worker(self, config):
            worker_class, group_class = super().add_actor_rollout_worker(config)
            if not probes:
                return worker_class, group_class
            for role in (Role.ActorRollout, Role.ActorRolloutRef):
                if role in self.role_worker_mapping:
                    self.role_worker_mapping[role] = ray.remote(LLDActorRolloutRefWorker)
            return LLDActorRolloutRefWorker, group_class

        def run(self, config):
            # the trainer this task runner's process builds
            legacy.RayPPOTrainer = LLDRayPPOTrainer if probes else TokenDumpRayPPOTrainer
            return super().run(config)

    return ray.remote(LLDTaskRunner)


def run(config) -> None:
    """verl's main_ppo with the probes (config: verl's composed Hydra config)."""
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from .settings import check_dump_config, check_verl_config, probe_settings_from_config, probes_enabled
    probes = probes_enabled(config.get("lld"))
    (check_verl_config if probes else check_dump_config)(config)
    probe_settings_from_config(config.get("lld"))          # a wrong lld.* key fails here, not inside Ray
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=_task_runner(probes))


def main() -> None:
    import hydra
    import verl.trainer
    config_dir = str(Path(verl.trainer.__file__).parent / "config")
    hydra.main(config_path=config_dir, config_name="ppo_trainer", version_base=None)(run)()


if __name__ == "__main__":
    main()
