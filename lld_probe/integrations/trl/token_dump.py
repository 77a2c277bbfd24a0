"""The sampled tokens of a run without the probes, for an exact re-scoring later (lld_probe.rescore).

    trainer = GRPOTrainer(...)          # any GRPOTrainer (or subclass), no probes
    add_token_dump(trainer)             # or: class MyTrainer(TokenDumpMixin, GRPOTrainer)
    trainer.train()

Each generation batch leaves OUTPUT_DIR/lld_tokens/step=NNNNNN[.rank=RRRRR].parquet: one row per response
of this process (`row`: its index in the global generation batch; `world_size`: the processes, one file each) with
the prompt and completion token ids (the completion's tokens, as TRL's completion mask has them; with multi-turn
tools also `measured`: per token, False on a tool's or environment's output, TRL's tool_mask), the text, TRL's
rewards (weighted sum and per function) and advantage, the sampler's token
log-probs where the generator returns them (vLLM), and TRL's old-policy log-probs where it computes them. Its cost: the batch's ids copied to the
CPU and one Parquet file per generation batch; no forward. A TrainerCallback cannot do this (callbacks
receive no batch), so it wraps two TRL methods: _calculate_rewards (the gathered rewards per function) and
_generate_and_score_completions (pinned by tests/test_trl_pins.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ...store.atomic import write_parquet
from ...store.schema import TOKEN_DUMP_DIR, step_path
from ...store.token_dump import dump_columns
from .adapter import completion_rows, measured_flags


def _rows(values: torch.Tensor | None, mask: torch.Tensor) -> list | None:
    if values is None:
        return None
    return [row[m].tolist() for row, m in zip(values.float().cpu(), mask)]


def dump_generation_batch(trainer, inputs, output, rewards_per_func, folder: Path) -> Path:
    """One generation batch (this process's rows) -> its dump file."""
    ids, mask = output["completion_ids"].cpu(), output["completion_mask"].cpu().bool()
    count = ids.shape[0]
    masked_out = ~mask.any(1) if getattr(trainer, "mask_truncated_completions", False) else torch.zeros(count, dtype=torch.bool)
    pad = trainer.processing_class.pad_token_id
    full = [row[row != pad].tolist() if pad is not None else row.tolist() for row in ids]
    present = completion_rows(ids, mask)
    texts = trainer.processing_class.batch_decode([f if cut else m for f, m, cut in zip(full, present, masked_out)],
                                                  skip_special_tokens=True)
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    offset = rank * count
    rewards = rewards_per_func.float().cpu()[offset: offset + count]
    weights = trainer.reward_weights.float().cpu()
    advantages = output["advantages"].detach().float().cpu()
    sampler, old = output.get("sampling_per_token_logps"), output.get("old_per_token_logps")
    columns = dump_columns(
        prompt_ids=[row[m.bool()].tolist() for row, m in zip(output["prompt_ids"].cpu(), output["prompt_mask"].cpu())],
        completion_ids=present, advantage=(advantages if advantages.dim() == 1 else advantages[:, 0]).tolist(),
        sampler_logps=_rows(sampler, mask),          # vLLM's, when it returns them
        old_policy_logps=_rows(old, mask))           # TRL's, when it computes them
    frame = pd.DataFrame({
        "step": trainer.state.global_step + 1, "row": range(offset, offset + count), "world_size": world,
        "prompt": [x["prompt"] for x in inputs], "truncated": masked_out.numpy(), "completion": texts,
        "reward": (rewards * weights[None, :]).nansum(dim=1).double().numpy(), **columns,
    })
    flags = measured_flags(output.get("tool_mask"), present)
    if flags is not None:               # multi-turn tools: the tool outputs inside completions are not measured
        frame["measured"] = flags
    for index, name in enumerate(trainer.reward_func_names):
        frame[f"reward_{name}"] = rewards[:, index].double().numpy()
    if "question_id" in inputs[0]:
        frame["question_id"] = [str(x["question_id"]) for x in inputs]
    path = step_path(folder, trainer.state.global_step + 1, rank if world > 1 else None)
    return write_parquet(frame, path)


def add_token_dump(trainer, folder=None):
    """Wrap this trainer instance's two methods so every training generation batch is dumped; returns it."""
    folder = Path(folder or Path(trainer.args.output_dir) / TOKEN_DUMP_DIR)
    calculate, generate = trainer._calculate_rewards, trainer._generate_and_score_completions
    kept = {}

    def _calculate_rewards(inputs, prompts, completions, completion_ids_list):
        kept["rewards"] = calculate(inputs, prompts, completions, completion_ids_list)
        return kept["rewards"]

    def _generate_and_score_completions(inputs):
        output = generate(inputs)
        if trainer.model.training and "rewards" in kept:
            dump_generation_batch(trainer, inputs, output, kept.pop("rewards"), folder)
        return output

    trainer._calculate_rewards = _calculate_rewards
    trainer._generate_and_score_completions = _generate_and_score_completions
    return trainer


class TokenDumpMixin:
    """`class MyTrainer(TokenDumpMixin, GRPOTrainer)`: add_token_dump on every instance."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        add_token_dump(self)
