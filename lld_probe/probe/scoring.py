"""Scoring a group with a model: per-token log-probs of the completion tokens (float32), optionally
the final hidden states that predict them and the next-token entropy."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..core import token_entropy, token_logprobs
from ..models.kv_cache import forward_parameters, prefill_repeated, supports_prefill, with_cache
from .batch import GroupBatch
from .hidden import capture_final_hidden


@dataclass
class ScoredGroup:
    token_logps: torch.Tensor            # [B, T] log pi(y_t | x, y_<t), 0 off mask
    hidden: torch.Tensor | None          # [B, T, d] state that predicts tokens[:, t]
    entropy: torch.Tensor | None         # [B, T]


def forward_logps(model, batch: GroupBatch, *, temperature: float = 1.0, with_hidden: bool = False,
                  with_entropy: bool = False, autocast_dtype=None, share_prompt: bool = True) -> ScoredGroup:
    """One forward of the group (with gradients if enabled by the caller). share_prompt: when every row
    has the same prompt, compute it once (a KV cache repeated per row); the numbers equal the full rows'
    up to float rounding."""
    device = next(model.parameters()).device
    cast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext())
    capture = capture_final_hidden(model) if with_hidden else nullcontext({})
    with capture as captured, cast:
        logits = _forward_shared_prompt(model, batch, device) if share_prompt else None
        if logits is not None:       # [B, T, V]: already one column per completion token
            hidden = captured["hidden"] if with_hidden else None
        else:
            # output layer only on the positions that predict completion tokens
            first = batch.first_predicting_position() if "logits_to_keep" in forward_parameters(model) else 0
            extra = {"logits_to_keep": batch.input_ids.shape[1] - first} if first else {}
            outputs = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                            use_cache=False, **extra)
            logits = batch.response_view(outputs.logits, first)
            hidden = batch.response_view(captured["hidden"], first) if with_hidden else None
    tokens, mask = batch.tokens.to(device), batch.mask.to(device)
    logps = token_logprobs(logits.float(), tokens, mask, temperature=temperature)
    hidden = hidden.float() if with_hidden else None
    entropy = token_entropy(logits.detach(), mask, temperature=temperature) if with_entropy else None
    return ScoredGroup(logps, hidden, entropy)


def _forward_shared_prompt(model, batch: GroupBatch, device):
    """For a group whose rows share one prompt: the prompt once (all but its last token, into a KV cache
    repeated for every row), then each row's last prompt token and completion. Column j of the returned
    logits [B, T, V] predicts tokens[:, j] (the state at t-1 predicts token t), as in a forward of the full
    rows, with the prompt computed once instead of B times. None when the batch or model does not allow it."""
    prompt_length = int(batch.prompt_lengths[0])
    if (batch.size < 2 or prompt_length < 2 or not supports_prefill(model)
            or not bool((batch.prompt_lengths == prompt_length).all())
            or not bool((batch.input_ids[:, :prompt_length] == batch.input_ids[:1, :prompt_length]).all())):
        return None
    _, cache = prefill_repeated(model, batch.input_ids[:1, : prompt_length - 1].to(device), batch.size)
    if cache is None:
        return None
    rows = torch.cat([batch.input_ids[:, prompt_length - 1: prompt_length], batch.tokens[:, :-1]], dim=1)
    # right padding of short completions only reaches positions after their last token (causal attention)
    return model(input_ids=rows.to(device), use_cache=True, **with_cache(model, cache)).logits


@torch.no_grad()
def score_group(model, batch: GroupBatch, *, temperature: float = 1.0, with_hidden: bool = False,
                with_entropy: bool = False, share_prompt: bool = True) -> ScoredGroup:
    """No-grad scoring in eval mode (dropout off), restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        return forward_logps(model, batch, temperature=temperature, with_hidden=with_hidden,
                             with_entropy=with_entropy, share_prompt=share_prompt)
    finally:
        model.train(was_training)
