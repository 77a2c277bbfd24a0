"""One training step of the verl worker extension (EngineProbes) on verl's own FSDP2 engine, on CPU with gloo:
run by every process of a test (torch.multiprocessing), writing what the test compares to files."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from cpu_shims import enable_cpu, init_gloo

GROUP_SIZE = 4
TEMPERATURE = 1.0
MINI_BATCHES = 3          # verl's update takes three optimizer steps on the batch: the store's window_steps


def tiny_dir() -> str:
    from lld_probe.models.tiny import TINY_DIR
    return str(TINY_DIR)


def make_batch(groups: int = 3, seed: int = 0) -> dict:
    """A generation batch in verl's layout: left-padded prompts, right-padded responses, rewards that mix each
    group (the tiny model's vocabulary; token values need not be sensible for the probes' arithmetic)."""
    generator = torch.Generator().manual_seed(seed)
    size = groups * GROUP_SIZE
    prompt_width, response_width = 7, 9
    prompts = torch.zeros(size, prompt_width, dtype=torch.long)
    responses = torch.zeros(size, response_width, dtype=torch.long)
    attention_mask = torch.zeros(size, prompt_width + response_width, dtype=torch.long)
    rewards = torch.zeros(size)
    for group in range(groups):
        prompt_length = 3 + group
        prompt = torch.randint(3, 40, (prompt_length,), generator=generator)
        for index in range(GROUP_SIZE):
            row = group * GROUP_SIZE + index
            length = int(torch.randint(3, response_width + 1, (1,), generator=generator))
            prompts[row, prompt_width - prompt_length:] = prompt
            responses[row, :length] = torch.randint(3, 40, (length,), generator=generator)
            attention_mask[row, prompt_width - prompt_length: prompt_width + length] = 1
            rewards[row] = float((index + group) % 3 == 0)      # every group mixed
    from verl.utils.model import compute_position_id_with_mask
    return {"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
            "attention_mask": attention_mask, "position_ids": compute_position_id_with_mask(attention_mask),
            "response_mask": attention_mask[:, prompt_width:].clone(), "rewards": rewards}


def grpo_token_advantages(rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """verl's own GRPO advantages (core_algos.compute_grpo_outcome_advantage) of the batch."""
    import numpy as np
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
    scores = torch.zeros(response_mask.shape)
    lengths = response_mask.sum(1)
    scores[torch.arange(len(rewards)), lengths - 1] = rewards
    uid = np.array([str(row // GROUP_SIZE) for row in range(len(rewards))], dtype=object)
    advantages, _ = compute_grpo_outcome_advantage(scores, response_mask, uid)
    return advantages


def build_worker(micro_batch: int = 2):
    from verl.workers.config import FSDPActorConfig, FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine_workers import TrainingWorker, TrainingWorkerConfig
    from verl.workers.utils.losses import ppo_loss
    model = HFModelConfig(path=tiny_dir(), use_remove_padding=True, override_config={"attn_implementation": "sdpa"})
    engine = FSDPEngineConfig(forward_only=False, strategy="fsdp2", use_dynamic_bsz=False,
                              micro_batch_size_per_gpu=micro_batch, infer_micro_batch_size_per_gpu=micro_batch,
                              mixed_precision={"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"},
                              use_torch_compile=False)
    worker = TrainingWorker(TrainingWorkerConfig(model_type="language_model", model_config=model, engine_config=engine,
                                                 optimizer_config=FSDPOptimizerConfig(lr=5e-3, weight_decay=0.0),
                                                 checkpoint_config=None))
    worker.reset()
    actor = FSDPActorConfig(strategy="fsdp2", rollout_n=GROUP_SIZE, ppo_mini_batch_size=1,
                            ppo_micro_batch_size_per_gpu=micro_batch, use_dynamic_bsz=False, loss_agg_mode="token-mean")
    worker.set_loss_fn(functools.partial(ppo_loss, config=actor))
    return worker


def run_rank(rank: int, world_size: int, port: int, out_dir: str, method: str) -> None:
    init_gloo(rank, world_size, port)
    enable_cpu()
    from verl import DataProto
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    from lld_probe.integrations.verl.engine_probes import (ADVANTAGES_KEY, ALL_REWARDS_KEY, GROUP_SIZE_KEY,
                                                           REWARD_KEY, STEP_KEY, WINDOW_STEPS_KEY, EngineProbes,
                                                           encode_rewards)
    from lld_probe.integrations.verl.layout import to_response_width
    from lld_probe.probes import ProbeSettings

    out = Path(out_dir)
    torch.manual_seed(0)
    worker = build_worker()
    settings = ProbeSettings(method=method, nthr_beta=1.0, probe_set_size=0, seed=3)
    probes = EngineProbes(worker, settings, out / "store", temperature=TEMPERATURE)
    probes.begin_run({"method": method, "source": "verl"})
    batch = make_batch()
    rewards = batch.pop("rewards")
    advantages = grpo_token_advantages(rewards, batch["response_mask"])
    data = DataProto.from_single_dict({**batch, "advantages": advantages, REWARD_KEY: rewards},
                                      meta_info={"temperature": TEMPERATURE,
                                                 "global_token_num": batch["attention_mask"].sum(-1).tolist()})
    td = left_right_2_no_padding(data.to_tensordict())
    tu.assign_non_tensor(td, **{STEP_KEY: 1, GROUP_SIZE_KEY: GROUP_SIZE, ALL_REWARDS_KEY: encode_rewards(rewards),
                                WINDOW_STEPS_KEY: MINI_BATCHES})
    mine = tu.chunk_tensordict(td, world_size)[rank]          # what verl's dispatch hands this rank
    scored = probes.score_old_policy(mine)
    old = probes.recorder.pending.old
    # the update, as update_actor runs it: verl's ppo_loss on the method's advantages, MINI_BATCHES optimizer steps
    train = mine.copy()
    train["advantages"] = scored[ADVANTAGES_KEY]
    train["old_log_probs"] = to_response_width(old.token_logps, mine["response_mask"])
    mini_batch = len(td) // MINI_BATCHES
    tu.assign_non_tensor(train, global_batch_size=mini_batch, mini_batch_size=mini_batch, epochs=1, seed=1,
                         dataloader_kwargs={"shuffle": False}, compute_loss=True, calculate_entropy=False)
    worker.train_mini_batch(train)
    metrics = probes.finish_step({"actor/loss": 0.0})
    weights = {name: tensor.detach().cpu().clone() for name, tensor in worker.engine.get_per_tensor_param()[0]}
    if rank == 0:
        torch.save(weights, out / "weights.pt")
        (out / "metrics.json").write_text(json.dumps(metrics))
    torch.save({"advantages": scored[ADVANTAGES_KEY], "rows": len(mine), "step_rows": probes.step_rows()},
               out / f"rank{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
