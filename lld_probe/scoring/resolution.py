"""The resolution of Delta where the weights are low precision: float32 log-likelihoods cannot be recovered
from bf16/fp16 weights, and rounding in the forwards moves a sequence log-likelihood by an amount that a
re-score of the same rows at the same parameters, in another layout, measures."""

from __future__ import annotations

import torch

from .batch import GroupBatch
from .lockstep import _ONE_FORWARD, agree, agree_on_count, idle_forward
from .packing import packing_unsupported_reason, prompt_blocks
from .precision import float32_forwards
from .scoring import forward_logps, score_group


def layout_resolution(model, batch: GroupBatch, *, temperature: float = 1.0, rows: int = 4) -> float:
    """Max |difference| between the sequence log-likelihoods of a few rows (of one prompt) scored in full
    padded rows and in another layout (packed, else the shared prompt), at unchanged parameters: the same
    arithmetic in another order. A change smaller than this is rounding; it is a lower bound of the
    rounding error of one log-likelihood (Delta takes two)."""
    sample = batch.select(torch.tensor(max(prompt_blocks(batch), key=len)[:rows]))
    other = "packed" if packing_unsupported_reason(model, sample) is None else "shared_prompt"
    full = score_group(model, sample, temperature=temperature, layout="rows").token_logps
    moved = score_group(model, sample, temperature=temperature, layout=other).token_logps
    return _sequence_difference(full, moved, sample)


def layout_resolution_in_lockstep(model, batch: GroupBatch | None, comm, *, temperature: float = 1.0,
                                  rows: int = 4) -> float:
    """layout_resolution on a sharded model (every process must run the same forwards, lld_probe.scoring.lockstep),
    the max over processes: the sample's rows in full padded rows (one forward) against packed (one forward) where
    every process can pack, else against each row alone (one forward per row, as many as the process with
    the most); a process without measured rows (batch None or empty) runs idle forwards instead."""
    sample = batch.select(torch.tensor(max(prompt_blocks(batch), key=len)[:rows])) \
        if batch is not None and batch.mask.any() else None
    packed = agree(comm, packing_unsupported_reason(model, sample) is None)
    own = (2 if packed else 1 + sample.size) if sample is not None else 0
    forwards = 2 if packed else agree_on_count(comm, own)
    difference = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), float32_forwards(model):
            if sample is not None:
                full = forward_logps(model, sample, temperature=temperature, layout="rows").token_logps
                if packed:
                    moved = forward_logps(model, sample, temperature=temperature, layout="packed",
                                          max_tokens=_ONE_FORWARD).token_logps
                else:
                    moved = torch.zeros_like(full)
                    for row in range(sample.size):
                        alone = forward_logps(model, sample.select(torch.tensor([row])), temperature=temperature,
                                              layout="rows").token_logps[0]
                        moved[row, : len(alone)] = alone
                difference = _sequence_difference(full, moved, sample)
            for _ in range(forwards - own):
                idle_forward(model)
    finally:
        model.train(was_training)
    return float(comm.all_reduce(torch.tensor([difference], dtype=torch.float64), "max", purpose="lockstep")[0])


def _sequence_difference(full: torch.Tensor, moved: torch.Tensor, sample: GroupBatch) -> float:
    """Max over rows of |sum of token log-probs in one layout - in the other| (float64)."""
    mask = sample.mask.to(full.device)
    return float(((full.double() - moved.double()) * mask).sum(1).abs().max())
