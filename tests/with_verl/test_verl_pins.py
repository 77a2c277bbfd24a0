"""Every verl API the integration relies on, pinned: when verl changes one, this names it."""

from __future__ import annotations

import inspect

import pytest

from needs_verl import require_verl

require_verl()

pytestmark = pytest.mark.verl

SUPPORTED = "0.9"


def _params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_verl_version_is_the_supported_one():
    import verl
    assert verl.__version__.startswith(SUPPORTED), (
        f"verl {verl.__version__}: lld_probe.integrations.verl is written against verl {SUPPORTED}.x; rerun "
        f"tests/with_verl and update the pins")


@pytest.mark.parametrize("module, name, parameters", [
    # the engine worker the probes run inside (engine_probes.py, worker.py)
    ("verl.workers.engine_workers", "TrainingWorker.infer_batch", ["self", "data"]),
    ("verl.workers.engine_workers", "TrainingWorker.train_mini_batch", ["self", "data"]),
    ("verl.workers.engine_workers", "ActorRolloutRefWorker.compute_log_prob", ["self", "data"]),
    ("verl.workers.engine_workers", "ActorRolloutRefWorker.update_actor", ["self", "data"]),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngineWithLMHead.forward_step",
     ["self", "micro_batch", "loss_function", "forward_only"]),
    ("verl.workers.engine.fsdp.transformer_impl", "FSDPEngine.get_data_parallel_size", ["self"]),
    ("verl.workers.engine.utils", "postprocess_batch_func", ["output_lst", "indices", "data"]),
    # the driver's side (step.py, trainer.py)
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer._update_actor", ["self", "batch"]),
    ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer.init_workers", ["self"]),
    ("verl.workers.utils.padding", "left_right_2_no_padding", ["data"]),
    ("verl.utils.tensordict_utils", "assign_non_tensor", ["tensor_dict", "kwargs"]),
    ("verl.utils.tensordict_utils", "get_non_tensor_data", ["data", "key", "default"]),
    ("verl.utils.tensordict_utils", "chunk_tensordict", ["td", "chunks"]),
    ("verl.protocol", "DataProto.select_idxs", ["self", "idxs"]),
    ("verl.protocol", "DataProto.to_tensordict", ["self"]),
    ("verl.single_controller.base.decorator", "make_nd_compute_dataproto_dispatch_fn", ["mesh_name"]),
])
def test_verl_api(module, name, parameters):
    import importlib
    target = importlib.import_module(module)
    for part in name.split("."):
        assert hasattr(target, part), f"verl changed: {module}.{name} is gone ({part} missing)"
        target = getattr(target, part)
    target = inspect.unwrap(target)
    assert _params(target)[: len(parameters)] == parameters, (
        f"verl changed: {module}.{name}{inspect.signature(target)}; the integration calls it with {parameters}")


def test_engine_outputs_and_batch_keys_the_probes_read():
    """forward_step's result carries model_output (where the hidden states ride), and update_actor's loss reads
    the advantages key the step writes."""
    from verl.workers.engine.fsdp import transformer_impl
    from verl.workers.utils import losses
    assert '"model_output"' in inspect.getsource(transformer_impl.FSDPEngineWithLMHead.forward_step)
    assert '"advantages"' in inspect.getsource(losses.ppo_loss)
    from verl.single_controller.base.decorator import Dispatch
    assert hasattr(Dispatch, "ONE_TO_ALL")
    from verl.workers.engine_workers import ActorRolloutRefWorker
    assert "self.actor" in inspect.getsource(ActorRolloutRefWorker.compute_log_prob)    # the TrainingWorker EngineProbes wraps


def test_the_integration_imports():
    from lld_probe.integrations.verl import LLDActorRolloutRefWorker, LLDRayPPOTrainer
    assert issubclass(LLDRayPPOTrainer, __import__("verl.trainer.ppo.ray_trainer", fromlist=["x"]).RayPPOTrainer)
    assert hasattr(LLDActorRolloutRefWorker, "lld_score_old_policy")
