"""GWHES: Group Weighted Hidden Embedding Score of each correct response (PAPER Sec. 4, Table 1)."""

from __future__ import annotations

import math

import torch

from ._checks import on_device
from .group import check_group
from .interaction import DEFAULT_BUDGET, interaction_scores


def preference_weights(correct: torch.Tensor) -> tuple[float, float]:
    """(p+, p-) = ((1-p)/sqrt(p(1-p)), p/sqrt(p(1-p))) with p = N+/G (population-std advantages)."""
    p = float(correct.float().mean())
    if p in (0.0, 1.0):
        return 0.0, 0.0
    spread = math.sqrt(p * (1.0 - p))
    return (1.0 - p) / spread, p / spread  # PAPER: A = p+ (correct), -p- (incorrect)


def gwhes(hidden, unembed, tokens, mask, correct, *, temperature=1.0, token_logprobs=None,
          method="auto", budget=DEFAULT_BUDGET, logit_transform=None) -> torch.Tensor:
    """GWHES_i = (II) - (I) for each correct response i, NaN for incorrect ones. Returns [G].

    (I)  = p+ sum_{k in y+_i} sum_{i'} sum_{k'' in y+_i'} alpha(k,k'') <h_k,h_k''>
    (II) = p- sum_{k in y+_i} sum_j   sum_{k'  in y-_j}  alpha(k,k')  <h_k,h_k'>
    The larger GWHES, the lazier the likelihood of y+_i. Full vocabulary, exact.
    Arguments as in nthr_token_scores.
    """
    check_group(hidden, unembed, tokens, mask, correct, temperature=temperature,
                token_logprobs=token_logprobs)
    hidden, tokens, mask, correct, token_logprobs = on_device(unembed.device, hidden, tokens, mask, correct,
                                                              token_logprobs)
    p_plus, p_minus = preference_weights(correct)
    correct_tokens = mask & correct[:, None]
    incorrect_tokens = mask & ~correct[:, None]
    # one pass with signed source weights: -p+ on correct tokens, +p- on incorrect tokens
    weights = incorrect_tokens.to(hidden.dtype) * p_minus - correct_tokens.to(hidden.dtype) * p_plus
    per_token = interaction_scores(hidden, unembed, tokens, correct_tokens, weights,
                                   temperature=temperature, token_logprobs=token_logprobs,
                                   method=method, budget=budget, logit_transform=logit_transform)
    # PAPER: GWHES_i = (II) - (I)
    result = per_token.sum(1)
    return torch.where(correct, result, torch.full_like(result, math.nan))
