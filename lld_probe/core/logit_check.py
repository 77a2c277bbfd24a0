"""Whether the log-probs a forward produced follow from its final hidden states and the output embedding.

The NTHR, GWHES and first-order scores compute pi = softmax(f(W h) / temperature) from the captured final
hidden states h, the output embedding W and the logit transform f (lld_probe.core.logit_transform). They
are the model's own numbers only if the model's log-probs are exactly that. Recomputing log pi(y_t) from
(h_{t-1}, W, f) at a few tokens and comparing with the forward's log-probs checks it: a head this project
does not know (an unread config entry, an adapter on the output layer, hidden states captured at the wrong
place or shifted by one token) shows as a difference far above float rounding.
"""

from __future__ import annotations

import torch

from ._checks import check_positive, check_shape, check_tensor
from .interaction import log_normalizer, work_dtype
from .logit_transform import LogitTransform, as_transform


def logprob_recomputation_error(hidden: torch.Tensor, unembed: torch.Tensor, tokens: torch.Tensor,
                                mask: torch.Tensor, token_logprobs: torch.Tensor, *, temperature: float = 1.0,
                                transform: LogitTransform | None = None, positions: int = 8) -> float:
    """max |log pi(y_t) recomputed from (hidden[t], W, f) - token_logprobs[t]| over up to `positions` tokens
    under mask, spread evenly over them (0.0 when the mask is empty). hidden [B, T, d] holds at t the state
    that predicts tokens[:, t] (the state after token t-1), as everywhere in the project."""
    check_tensor("hidden", hidden, ndim=3, dtype="float")
    check_tensor("unembed", unembed, ndim=2, dtype="float")
    check_shape("tokens", tokens, hidden.shape[:2])
    check_shape("mask", mask, hidden.shape[:2])
    check_shape("token_logprobs", token_logprobs, hidden.shape[:2])
    check_positive("positions", positions)
    transform = as_transform(transform)
    where = mask.nonzero()
    if len(where) == 0:
        return 0.0
    where = where[torch.linspace(0, len(where) - 1, min(positions, len(where))).round().long().unique()]
    dtype = work_dtype(hidden)
    device = unembed.device
    rows = hidden[where[:, 0], where[:, 1]].to(device=device, dtype=dtype)
    chosen = tokens[where[:, 0], where[:, 1]].to(device)
    # log pi(y_t) = f(w_{y_t} . h_t) / T - logsumexp_v f(W h_t)_v / T      (PAPER: pi = softmax(W h / T))
    own = transform.logits((rows * unembed[chosen].to(dtype)).sum(1)) / temperature
    recomputed = own - log_normalizer(rows, unembed, temperature=temperature, transform=transform)
    stored = token_logprobs[where[:, 0], where[:, 1]].to(device=device, dtype=dtype)
    return float((recomputed - stored).abs().max())
