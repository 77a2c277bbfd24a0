"""One step's rows for the run store (schema: lld_probe.store.schema) from a probed batch and the
log-likelihoods measured after the update."""

from __future__ import annotations

import pandas as pd
import torch

from ..store.schema import group_id
from .records import ProbedBatch


def _row_ids(probed: ProbedBatch, rows, step: int, first_group: int) -> tuple[list, list]:
    """(group ids, response indices) of local rows, from their place in the global batch; first_group: the
    groups of batches written before this one at the same step."""
    generation = probed.generation
    size, offset = generation.group_size, generation.layout.offset
    return ([group_id(step, first_group + (offset + r) // size) for r in rows], [(offset + r) % size for r in rows])


def response_rows(probed: ProbedBatch, logp_after: torch.Tensor, *, step: int | None = None, first_group: int = 0,
                  window_steps: int = 1) -> pd.DataFrame:
    """One row per response of this process (RESPONSE_COLUMNS), under `step` (default the batch's own) with
    window_steps (the optimizer steps its Delta spans); n_tokens and the fractions count measured tokens."""
    generation, old = probed.generation, probed.old
    step = generation.step if step is None else step
    lengths = generation.batch.measured.sum(1)
    groups, indices = _row_ids(probed, range(generation.size), step, first_group)
    return pd.DataFrame({
        "step": step, "question_id": list(generation.question_ids), "group_id": groups,
        "response_index": indices, "prompt": list(generation.prompts), "completion": list(generation.completions),
        "reward": generation.rewards.double().numpy(), "correct": generation.correct.numpy(),
        "advantage": generation.advantages.double().numpy(), "n_tokens": lengths.numpy(),
        "logp_before": old.logp_before.double().cpu().numpy(), "logp_after": logp_after.numpy(),
        "scaled_fraction": (probed.scaled.sum(1).float() / lengths.clamp(min=1)).double().numpy(),
        "nthr_selected_fraction": (old.nthr_selected.sum(1).float() / lengths.clamp(min=1)).double().numpy(),
        "truncated": generation.truncated.numpy(),
        "sampler_masked": (generation.sampler_masked if generation.sampler_masked is not None
                           else torch.zeros(generation.size, dtype=torch.bool)).numpy(),
        "window_steps": int(window_steps),
        "prompt_ids": prompt_token_lists(generation.batch),
    })


def prompt_token_lists(batch) -> list[list[int]]:
    """Each row's prompt token ids (no padding), as scored."""
    return [batch.input_ids[row, : int(batch.prompt_lengths[row])].tolist() for row in range(batch.size)]


def token_rows(probed: ProbedBatch, token_logps_after: torch.Tensor, *, step: int | None = None,
               first_group: int = 0) -> pd.DataFrame | None:
    """One row per completion token of the responses re-scored after the step (TOKEN_COLUMNS); None when none
    was. A token outside the measured ones (a tool's output) has measured False and NaN in the measured
    columns (logp_before, logp_after, nthr_score, entropy)."""
    generation, old = probed.generation, probed.old
    step = generation.step if step is None else step
    rescored = generation.rescored.nonzero().flatten()
    if not len(rescored):
        return None
    batch = generation.batch
    lengths = batch.mask.sum(1)
    index = [(int(i), t) for i in rescored for t in range(int(lengths[i]))]
    rows, cols = (list(x) for x in zip(*index)) if index else ([], [])
    groups, indices = _row_ids(probed, rows, step, first_group)
    measured = batch.measured[rows, cols]

    def measured_only(values: torch.Tensor):
        return values[rows, cols].float().cpu().masked_fill(~measured, float("nan")).numpy()

    return pd.DataFrame({
        "step": step, "group_id": groups, "response_index": indices,
        "token_id": batch.tokens[rows, cols].numpy(), "position": cols,
        "logp_before": measured_only(old.token_logps),
        "logp_after": measured_only(token_logps_after),
        "nthr_score": measured_only(old.scores),
        "scaled": probed.scaled[rows, cols].numpy(),
        "nthr_selected": old.nthr_selected[rows, cols].numpy(),
        "entropy": measured_only(old.entropy),
        "measured": measured.numpy(),
    })
