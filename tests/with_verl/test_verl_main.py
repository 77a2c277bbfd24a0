"""The verl launch entry point: verl's own Hydra config with an lld block; settings the probes cannot follow
are refused before Ray starts; the task runner maps the actor role to the worker extension."""

from __future__ import annotations

from pathlib import Path

import pytest

from needs_verl import require_verl

require_verl()

pytestmark = pytest.mark.verl


def _config(*overrides):
    import verl.trainer
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(Path(verl.trainer.__file__).parent / "config"), version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def test_launch_refuses_before_ray():
    from lld_probe.integrations.verl.main import run
    with pytest.raises(ValueError, match="trainer.use_v1"):
        run(_config("+lld.method=nthr"))                   # verl 0.9.1's default is the v1 trainer
    with pytest.raises(ValueError, match="lld.methd"):
        run(_config("trainer.use_v1=false", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=4",
                    "+lld.methd=nthr"))


@pytest.mark.parametrize("overrides, message", [
    ((), "^algorithm.adv_estimator=gae: "),                       # verl's default estimator: a critic's GAE
    (("algorithm.adv_estimator=grpo",), "^actor_rollout_ref.rollout.n=1: "),     # verl's default n
    (("algorithm.adv_estimator=reinforce_plus_plus", "algorithm.use_kl_in_reward=true",
      "actor_rollout_ref.rollout.n=4"), "^algorithm.use_kl_in_reward=true with adv_estimator=reinforce_plus_plus"),
])
def test_launch_refuses_per_token_advantages_and_single_responses_before_ray(overrides, message):
    from lld_probe.integrations.verl.main import run
    with pytest.raises(ValueError, match=message):
        run(_config("trainer.use_v1=false", "+lld.method=nthr", *overrides))


def test_lld_block_from_the_command_line():
    from lld_probe.integrations.verl.settings import probe_settings_from_config
    config = _config("trainer.use_v1=false", "+lld.method=nthr", "+lld.nthr_beta=1", "+lld.store_dir=/tmp/x")
    settings, store = probe_settings_from_config(config.lld)
    assert (settings.method, settings.nthr_beta, store) == ("nthr", 1.0, "/tmp/x")


def test_task_runner_maps_the_actor_to_the_worker_extension():
    from lld_probe.integrations.verl.main import _task_runner
    from lld_probe.integrations.verl.worker import LLDActorRolloutRefWorker
    runner = _task_runner().__ray_metadata__.modified_class()
    worker_class, _ = runner.add_actor_rollout_worker(_config("trainer.use_v1=false"))
    assert worker_class is LLDActorRolloutRefWorker
    [mapped] = runner.role_worker_mapping.values()
    assert issubclass(mapped.__ray_metadata__.modified_class, LLDActorRolloutRefWorker)


def test_probes_false_keeps_verls_worker_and_refuses_the_v1_trainer():
    from lld_probe.integrations.verl.main import _task_runner, run
    from lld_probe.integrations.verl.worker import LLDActorRolloutRefWorker
    with pytest.raises(ValueError, match="token dump runs on verl's RayPPOTrainer"):
        run(_config("+lld.probes=false"))
    runner = _task_runner(probes=False).__ray_metadata__.modified_class()
    worker_class, _ = runner.add_actor_rollout_worker(_config("trainer.use_v1=false"))
    assert not issubclass(worker_class, LLDActorRolloutRefWorker)
    [mapped] = runner.role_worker_mapping.values()
    assert not issubclass(mapped.__ray_metadata__.modified_class, LLDActorRolloutRefWorker)


def _documented_launch() -> list:
    """The settings of docs/verl.md's launch command (its fenced block; backslash continuations joined)."""
    import shlex
    text = (Path(__file__).resolve().parents[2] / "docs" / "verl.md").read_text()
    module = "python -m lld_probe.integrations.verl.main "
    start = text.index("```bash\n" + module) + len("```bash\n")
    command = text[start: text.index("```", start)].replace("\\\n", " ")
    return shlex.split(command)[len(module.split()):]


def test_the_documented_launch_passes_the_refusals():
    from lld_probe.integrations.verl.settings import check_verl_config, probe_settings_from_config
    overrides = _documented_launch()
    assert "algorithm.adv_estimator=grpo" in overrides and "+lld.method=nthr" in overrides
    config = _config(*overrides)
    check_verl_config(config)
    settings, store = probe_settings_from_config(config.lld)
    assert (settings.method, settings.correct_threshold, store) == ("nthr", 1.0, "/shared/runs/nthr")
