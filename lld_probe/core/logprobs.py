"""Token and sequence log-likelihoods with explicit next-token alignment.

Alignment convention used throughout lld_probe: a causal LM's output at position t-1 (logits or
final hidden state) predicts the token at position t. Two functions make that shift: `align_next_token`
here for whole sequences (outputs over input_ids), and `GroupBatch.response_view` in lld_probe.scoring
for the response layout of a group; every other function receives aligned tensors: x[:, t] predicts
tokens[:, t].
"""

from __future__ import annotations

import torch

from ._checks import check_positive, check_shape, check_tensor, on_device


def align_next_token(states: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor):
    """Shift model outputs so that position t of the result predicts token t.

    states: [B, L, ...] logits or hidden states of a causal LM over input_ids [B, L].
    response_mask: [B, L] bool, True on the response tokens (the tokens to score).
    Returns (states[:, :-1], input_ids[:, 1:], response_mask[:, 1:]): the output at L-1 predicts
    nothing and the first input token has no prediction, so a mask that is True at position 0 is
    an error.
    """
    check_tensor("states", states, dtype="float")
    check_tensor("input_ids", input_ids, ndim=2, dtype="long")
    check_tensor("response_mask", response_mask, ndim=2, dtype="bool")
    if states.dim() < 2 or tuple(states.shape[:2]) != tuple(input_ids.shape):
        raise ValueError(f"states must start with the shape of input_ids {tuple(input_ids.shape)}, "
                         f"got {tuple(states.shape)}")
    check_shape("response_mask", response_mask, tuple(input_ids.shape))
    if bool(response_mask[:, 0].any()):
        raise ValueError("response_mask is True at position 0: the first token has no prediction")
    input_ids, response_mask = on_device(states.device, input_ids, response_mask)
    return states[:, :-1], input_ids[:, 1:], response_mask[:, 1:]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None,
                   *, temperature: float = 1.0) -> torch.Tensor:
    """log pi(tokens[..., t] | context) from aligned logits [..., T, V]; 0 where mask is False.

    Computed in float32 (float64 if the logits are float64) whatever the logits' dtype.
    """
    check_tensor("logits", logits, dtype="float")
    check_tensor("tokens", tokens, dtype="long")
    check_positive("temperature", temperature)
    if tuple(logits.shape[:-1]) != tuple(tokens.shape):
        raise ValueError(f"tokens must have shape {tuple(logits.shape[:-1])} (logits without the "
                         f"vocabulary axis), got {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= logits.shape[-1]):
        raise ValueError(f"tokens must lie in [0, {logits.shape[-1]}) (the vocabulary of logits)")
    tokens, mask = on_device(logits.device, tokens, mask)
    work = torch.float64 if logits.dtype == torch.float64 else torch.float32
    scaled = logits.to(work) / temperature
    # log pi(y_t) = z_{y_t} - logsumexp(z): the softmax policy at the sampling temperature
    picked = scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    result = picked - torch.logsumexp(scaled, dim=-1)
    if mask is not None:
        check_tensor("mask", mask, dtype="bool")
        check_shape("mask", mask, tuple(tokens.shape))
        result = result.masked_fill(~mask, 0.0)
    return result


def token_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None, *,
                  temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the next-token distribution softmax(logits / temperature); 0 where mask is False."""
    check_tensor("logits", logits, dtype="float")
    check_positive("temperature", temperature)
    work = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_probs = torch.log_softmax(logits.to(work) / temperature, dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    if mask is not None:
        check_shape("mask", mask, tuple(entropy.shape))
        mask, = on_device(entropy.device, mask)
        entropy = entropy.masked_fill(~mask, 0.0)
    return entropy


def sequence_logprob(token_logps: torch.Tensor, mask: torch.Tensor, *, reduction: str = "sum") -> torch.Tensor:
    """Response log-likelihood log pi(y|x) from per-token log-probs [..., T] (PAPER: sum over tokens).

    reduction "sum" (the paper's log pi(y|x)) or "mean" (per-token mean; NaN for an empty response).
    """
    check_tensor("token_logps", token_logps, dtype="float")
    check_tensor("mask", mask, dtype="bool")
    check_shape("mask", mask, tuple(token_logps.shape))
    mask, = on_device(token_logps.device, mask)
    total = token_logps.masked_fill(~mask, 0.0).sum(-1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = mask.sum(-1)
        return total / count.to(total.dtype).masked_fill(count == 0, float("nan"))
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
