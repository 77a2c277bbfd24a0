"""Scoring a group with a model: per-token log-probs of the completion tokens (float32), optionally
the final hidden states that predict them and the next-token entropy."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..core import token_entropy, token_logprobs
from .batch import GroupBatch
from .hidden import capture_final_hidden


@dataclass
class ScoredGroup:
    token_logps: torch.Tensor            # [B, T] log pi(y_t | x, y_<t), 0 off mask
    hidden: torch.Tensor | None          # [B, T, d] state that predicts tokens[:, t]
    entropy: torch.Tensor | None         # [B, T]


def forward_logps(model, batch: GroupBatch, *, temperature: float = 1.0, with_hidden: bool = False,
                  with_entropy: bool = False, autocast_dtype=None) -> ScoredGroup:
    """One forward of the group (with gradients if enabled by the caller)."""
    device = next(model.parameters()).device
    cast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext())
    capture = capture_final_hidden(model) if with_hidden else nullcontext({})
    with capture as captured, cast:
        outputs = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                        use_cache=False)
    logits = batch.response_view(outputs.logits)
    tokens, mask = batch.tokens.to(device), batch.mask.to(device)
    logps = token_logprobs(logits.float(), tokens, mask, temperature=temperature)
    hidden = batch.response_view(captured["hidden"]).float() if with_hidden else None
    entropy = token_entropy(logits.detach(), mask, temperature=temperature) if with_entropy else None
    return ScoredGroup(logps, hidden, entropy)


@torch.no_grad()
def score_group(model, batch: GroupBatch, *, temperature: float = 1.0, with_hidden: bool = False,
                with_entropy: bool = False) -> ScoredGroup:
    """No-grad scoring in eval mode (dropout off), restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        return forward_logps(model, batch, temperature=temperature, with_hidden=with_hidden,
                             with_entropy=with_entropy)
    finally:
        model.train(was_training)
