"""The resolution of Delta where the weights are low precision: float32 log-likelihoods cannot be recovered
from bf16/fp16 weights, and rounding in the forwards moves a sequence log-likelihood by an amount that a
re-score of the same rows at the same parameters, in another layout, measures."""

from __future__ import annotations

import torch

from .batch import GroupBatch
from .packing import packing_unsupported_reason, prompt_blocks
from .scoring import score_group


def layout_resolution(model, batch: GroupBatch, *, temperature: float = 1.0, rows: int = 4) -> float:
    """Max |difference| between the sequence log-likelihoods of a few rows (of one prompt) scored in full
    padded rows and in another layout (packed, else the shared prompt), at unchanged parameters: the same
    arithmetic in another order. A change smaller than this is rounding; it is a lower bound of the
    rounding error of one log-likelihood (Delta takes two)."""
    sample = batch.select(torch.tensor(max(prompt_blocks(batch), key=len)[:rows]))
    other = "packed" if packing_unsupported_reason(model, sample) is None else "shared_prompt"
    full = score_group(model, sample, temperature=temperature, layout="rows").token_logps
    moved = score_group(model, sample, temperature=temperature, layout=other).token_logps
    mask = sample.mask.to(full.device)
    difference = ((full.double() - moved.double()) * mask).sum(1).abs().max()
    return float(difference)
