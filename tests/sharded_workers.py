"""One probed step on a sharded model (FSDP2 by torch's fully_shard, gloo on CPU), for tests/test_sharding.py;
the same step on one process with the whole model is the reference."""

from __future__ import annotations

import os

import torch

GROUP_SIZE = 4
LOCAL_ROWS = 8          # two whole groups per process


def build_model(case: dict):
    """The tiny model (tied embeddings), or a tiny random Qwen2 with its own lm_head (untied)."""
    if case["model"] == "tiny":
        from lld_probe.models import load_model
        return load_model("tiny")[0]
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    return Qwen2ForCausalLM(config).eval()


def rows_of(case: dict, rank: int):
    """This process's (prompt ids, completion ids, truncated) and every process's deciding rewards; the
    later process has longer completions (more packed forwards), and `truncate_rows` of it empty."""
    generator = torch.Generator().manual_seed(1000 + rank)
    prompts, completions, truncated = [], [], []
    for group in range(LOCAL_ROWS // GROUP_SIZE):
        prompt = torch.randint(4, 30, (5 + group,), generator=generator).tolist()
        for index in range(GROUP_SIZE):
            row = group * GROUP_SIZE + index
            cut = rank == 1 and row in case.get("truncate_rows", ())
            length = 0 if cut else int(torch.randint(2, 6, (1,), generator=generator)) * (1 + 5 * rank)
            prompts.append(prompt)
            completions.append(torch.randint(4, 30, (length,), generator=generator).tolist())
            truncated.append(cut)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0] * 2)
    return prompts, completions, truncated, rewards


def probed_step(model, recorder, prompts, completions, truncated, rewards, rank: int):
    """begin_batch, the old policy's scores, a deterministic change of every weight, finish_step."""
    from lld_probe.integrations.sharding import full_output_embedding
    count = len(prompts)
    local = rewards[rank * count: (rank + 1) * count]
    generation = recorder.begin_batch(1, prompts, completions, rewards=local, deciding_rewards=rewards,
                                      advantages=local - 0.5, group_size=GROUP_SIZE,
                                      prompts=[str(p) for p in prompts], completions=[str(c) for c in completions],
                                      question_ids=[str(p) for p in prompts], truncated=truncated)
    scored = recorder.score(model, generation.batch, with_hidden=True, with_entropy=True)
    with full_output_embedding(model) as unembed:
        recorder.score_old_policy(generation, scored.token_logps, scored.entropy, scored.hidden, unembed)
    with torch.no_grad():          # the "update": the same on every process, sharded or not
        for parameter in model.parameters():
            parameter.mul_(0.97)
    record = recorder.finish_step(model)
    return {"responses": record.responses, "tokens": record.tokens}


def sharded_worker(rank: int, world_size: int, store_file: str, case: dict, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from lld_probe.integrations.sharding import refuse_unsupported_sharding, sharding_of
    from lld_probe.probes import ProbeRecorder, ProbeSettings, TorchDistributed
    model = build_model(case)
    mesh = init_device_mesh("cpu", (world_size,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    if case.get("lm_head_unit"):
        fully_shard(model.lm_head, mesh=mesh)
    fully_shard(model, mesh=mesh)
    kind = refuse_unsupported_sharding(model)
    settings = ProbeSettings(method="nthr", probe_score_max_tokens=case["max_tokens"], probe_set_size=4,
                             probe_every=1, probe_response_fraction=case.get("fraction", 1.0), seed=case["seed"])
    comm = TorchDistributed()
    recorder = ProbeRecorder(settings, os.path.join(out_dir, "store"), temperature=1.0, pad_id=0, comm=comm,
                             sharded=True)
    recorder.begin_run({})
    prompts, completions, truncated, rewards = rows_of(case, rank)
    counted = []
    handle = model.register_forward_pre_hook(lambda module, args: counted.append(1))
    result = probed_step(model, recorder, prompts, completions, truncated, rewards, rank)
    handle.remove()
    result.update(kind=kind, sharding=sharding_of(model), forwards=len(counted), probe_items=recorder.probe_items)
    if case["model"] == "tiny":       # FSDP1 is refused with a message that names it
        from torch.distributed.fsdp import FullyShardedDataParallel
        wrapped = FullyShardedDataParallel(build_model({"model": "random"}), device_id=torch.device("cpu"))
        try:
            refuse_unsupported_sharding(wrapped)
            result["fsdp1_refusal"] = ""
        except ValueError as error:
            result["fsdp1_refusal"] = str(error)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def zero3_worker(rank: int, world_size: int, store_file: str, out_dir: str) -> None:
    """DeepSpeed ZeRO-3 on CPU (gloo): the gathered output embedding and lockstep scoring of unequal rows."""
    os.environ.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import deepspeed
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    deepspeed.init_distributed(dist_backend="gloo")
    from lld_probe.integrations.sharding import full_output_embedding, sharding_of
    from lld_probe.probes import TorchDistributed
    from lld_probe.scoring import build_group_batch
    from lld_probe.scoring.lockstep import score_in_lockstep
    model = build_model({"model": "random"})
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config={
        "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True,
        "optimizer": {"type": "SGD", "params": {"lr": 0.0}}})
    with full_output_embedding(engine.module) as unembed:
        weight = unembed.clone()
    batch = build_group_batch([[5, 6, 7]] * 2, [[8, 9, 10] * (1 + 5 * rank), [11, 12]], 0)
    scored = score_in_lockstep(engine.module, batch, TorchDistributed(), max_tokens=8)
    torch.save({"sharding": sharding_of(engine), "weight": weight, "token_logps": scored.token_logps,
                "batch": batch}, os.path.join(out_dir, f"zero3_rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def _accelerate_autocast(model, dtype=torch.bfloat16):
    """accelerate's mixed-precision wrapper (as Accelerator.prepare_model with bf16 puts it on: TRL bf16=True)."""
    from types import MethodType

    from accelerate.utils import convert_outputs_to_fp32
    model._original_forward = model.forward
    autocast = torch.autocast(device_type="cpu", dtype=dtype)
    model.forward = MethodType(convert_outputs_to_fp32(autocast(model.forward.__func__)), model)
    return model


def _sharded(model, mesh, **kwargs):
    from torch.distributed.fsdp import fully_shard
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, **kwargs)
    fully_shard(model, mesh=mesh, **kwargs)
    return model


def precision_worker(rank: int, world_size: int, store_file: str, out_dir: str) -> None:
    """FSDP2 and precision: lockstep scoring under accelerate's bf16 autocast wrapper (float32 numbers), a
    bf16 MixedPrecisionPolicy (bf16 parameters, labelled), and lld/delta_resolution of bf16 weights."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from lld_probe.probes import ProbeRecorder, ProbeSettings, TorchDistributed
    from lld_probe.scoring import build_group_batch
    from lld_probe.scoring.lockstep import score_in_lockstep
    from lld_probe.scoring.precision import low_precision_weights, probe_precision
    mesh, comm, result = init_device_mesh("cpu", (world_size,)), TorchDistributed(), {}
    batch = build_group_batch([[5, 6, 7]] * 2, [[8, 9, 10] * (1 + 5 * rank), [11, 12]], 0)
    result["batch"] = batch
    # accelerate's autocast wrapper on an FSDP2 model of float32 weights
    model = _accelerate_autocast(_sharded(build_model({"model": "random"}), mesh))
    result["autocast_logps"] = score_in_lockstep(model, batch, comm, max_tokens=8).token_logps
    result["autocast_wrapper_kept"] = model.__dict__["forward"] is not model.__dict__["_original_forward"]
    # FSDP2 mixed precision: float32 weights gathered as bf16 for every forward
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16)
    model = _sharded(build_model({"model": "random"}), mesh, mp_policy=policy)
    result["mp_label"], result["mp_low_precision"] = probe_precision(model), low_precision_weights(model)
    result["mp_stored_dtype"] = next(model.parameters()).dtype
    result["mp_logps"] = score_in_lockstep(model, batch, comm, max_tokens=8).token_logps
    # bf16 weights: the resolution of Delta, measured in lockstep
    model = _sharded(build_model({"model": "random"}).to(torch.bfloat16), mesh)
    case = {"model": "random", "seed": 0}
    settings = ProbeSettings(method="nthr", probe_score_max_tokens=24, probe_set_size=4, probe_every=1, seed=0)
    recorder = ProbeRecorder(settings, os.path.join(out_dir, "store"), temperature=1.0, pad_id=0, comm=comm,
                             sharded=True)
    recorder.begin_run({})
    probed_step(model, recorder, *rows_of(case, rank), rank)
    result["metrics"] = dict(recorder.last.metrics)
    torch.save(result, os.path.join(out_dir, f"precision_rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
