"""First-order (one gradient step) prediction of each response's log-likelihood change.

Unconstrained-features view (PAPER Sec. 4): logits = W h / temperature and only W moves. One SGD step
of size lr on the group loss L = -(1/Z) sum_{j,k} A_{j,k} log pi(y_{j,k}) changes W by
lr/(Z temperature) sum_{j,k} A_{j,k} g_{j,k} h_{j,k}^T, so to first order
    Delta log pi(y_i) = lr / (Z temperature^2) * sum_{t in y_i} sum_{j,k} A_{j,k} alpha(k,t) <h_k,h_t>,
which for population-std advantages is lr/(Z T^2) * ((I) - (II)) for a correct response.
The unembedding (hidden-state) terms and clipping are dropped, as in the paper.
"""

from __future__ import annotations

import torch

from ._checks import check_shape, check_tensor, on_device
from .group import check_group, vocab_columns
from .interaction import DEFAULT_BUDGET, interaction_scores


def first_order_logp_change(hidden, unembed, tokens, mask, advantages, *, lr=1.0, temperature=1.0,
                            normalizer="token_mean", vocab="full", token_logprobs=None,
                            method="auto", budget=DEFAULT_BUDGET, logit_transform=None) -> torch.Tensor:
    """Predicted change of log pi(y_g|x) (sequence sum) for every response g after one SGD step.

    advantages: [G] per response or [G, T] per token (e.g. NTHR's eta-scaled advantages), or [K, G, T]
    for K updates of the same group at once (returns [K, G]; the vocabulary pass is shared).
    normalizer: "token_mean" (Z = number of response tokens in the group: TRL/verl token-mean loss),
    "sequence_mean" (each response's tokens averaged, then mean over G: Z_i = G * |y_i|, applied per
    source response), or a positive number Z. lr multiplies the result. Returns [G].
    """
    check_group(hidden, unembed, tokens, mask, temperature=temperature, token_logprobs=token_logprobs)
    check_tensor("advantages", advantages, dtype="float", finite=True)
    hidden, tokens, mask, advantages, token_logprobs = on_device(unembed.device, hidden, tokens, mask, advantages,
                                                                 token_logprobs)
    if advantages.dim() == 1:
        check_shape("advantages", advantages, (tokens.shape[0],))
        advantages = advantages[:, None].expand(tokens.shape)
    elif advantages.dim() == 3:
        check_shape("advantages", advantages, (advantages.shape[0], *tokens.shape))
    else:
        check_shape("advantages", advantages, tuple(tokens.shape))
    weights = advantages.to(hidden.dtype).masked_fill(~mask, 0.0)
    lengths = mask.sum(1)
    if normalizer == "token_mean":
        weights = weights / max(int(lengths.sum()), 1)
    elif normalizer == "sequence_mean":
        weights = weights / (tokens.shape[0] * lengths.clamp(min=1))[:, None].to(weights.dtype)
    elif isinstance(normalizer, (int, float)) and normalizer > 0:
        weights = weights / float(normalizer)
    else:
        raise ValueError(f"normalizer must be 'token_mean', 'sequence_mean' or a positive number, got {normalizer!r}")
    per_token = interaction_scores(hidden, unembed, tokens, mask, weights, temperature=temperature,
                                   columns=vocab_columns(tokens, mask, vocab),
                                   token_logprobs=token_logprobs, method=method, budget=budget,
                                   logit_transform=logit_transform)
    # Delta log pi(y_i) ~ lr / (Z temperature^2) * sum_{t in y_i} sum_k A_k alpha(k,t) <h_k,h_t>
    return lr / temperature ** 2 * per_token.sum(-1)
