"""NTHR scores in two parts, for a group whose responses are spread over several processes.

The score of a token is linear in the positive aggregate (PAPER: NTHR score, matrix form):
    M+ = sum over correct tokens k of g_k h_k^T   (|C| x d, C the vocabulary columns kept),
    s(t) = g_t^T M+ h_t.
Each process computes the part of M+ from its own correct tokens (`positive_aggregate`); the parts are
summed across processes; then every process scores its own tokens (`scores_from_aggregate`). With the
same columns C on every process (for vocab="group": the union of the group's token ids) the result is
the single-process `nthr_token_scores` up to float rounding.
"""

from __future__ import annotations

import torch

from ._checks import on_device
from .group import check_group
from .interaction import DEFAULT_BUDGET, column_positions, token_log_normalizer, work_dtype
from .logit_transform import as_transform


def _errors_and_probs(hidden_rows, row_tokens, unembed, ids, token_column, start, lse, temperature, dtype,
                      transform):
    """pi over the chunk's columns [N, Vc] and g = (e_y - pi) * f'(W h) restricted to them [N, Vc]
    (f the logit transform; lld_probe.core.interaction)."""
    products = hidden_rows @ unembed[ids].to(dtype).T
    probs = torch.exp(transform.logits(products) / temperature - lse[:, None])
    errors = -probs
    local = token_column - start
    hit = ((local >= 0) & (local < ids.numel())).nonzero().squeeze(1)
    errors[hit, local[hit]] += 1.0
    slopes = transform.slope(products)
    return probs, errors if slopes is None else errors * slopes


def positive_aggregate(hidden, unembed, tokens, mask, correct, *, columns: torch.Tensor | None,
                       temperature: float = 1.0, token_logprobs=None, budget: int = DEFAULT_BUDGET,
                       logit_transform=None) -> torch.Tensor:
    """This process's part of M+ = sum over its correct responses' tokens of g_k h_k^T: [|C|, d]
    (float64 for float64 inputs, else float32); columns None = the full vocabulary."""
    check_group(hidden, unembed, tokens, mask, correct, temperature=temperature, token_logprobs=token_logprobs)
    hidden, tokens, mask, correct, token_logprobs = on_device(unembed.device, hidden, tokens, mask, correct,
                                                              token_logprobs)
    dtype = work_dtype(hidden)
    transform = as_transform(logit_transform)
    source = mask & correct[:, None]
    rows = hidden[source].to(dtype)
    row_tokens = tokens[source]
    n_columns, token_column, _ = column_positions(row_tokens, columns, unembed.shape[0])
    aggregate = torch.zeros((n_columns, hidden.shape[-1]), dtype=dtype, device=hidden.device)
    if rows.shape[0] == 0:
        return aggregate
    lse = token_log_normalizer(rows, row_tokens, unembed, temperature=temperature, budget=budget, transform=transform,
                               token_logprobs=None if token_logprobs is None else token_logprobs[source])
    chunk = max(1, budget // rows.shape[0])
    for start in range(0, n_columns, chunk):
        ids = torch.arange(start, min(start + chunk, n_columns), device=hidden.device) if columns is None \
            else columns[start:start + chunk]
        _, errors = _errors_and_probs(rows, row_tokens, unembed, ids, token_column, start, lse, temperature, dtype,
                                      transform)
        # PAPER (NTHR, matrix form): M+ = sum_k g_k h_k^T over correct tokens
        aggregate[start:start + ids.numel()] = errors.T @ rows
    return aggregate


def scores_from_aggregate(aggregate, hidden, unembed, tokens, mask, *, columns: torch.Tensor | None,
                          temperature: float = 1.0, token_logprobs=None, budget: int = DEFAULT_BUDGET,
                          logit_transform=None) -> torch.Tensor:
    """s(t) = g_t^T M+ h_t for every masked token of this process's responses [G, T] (0 off mask), with
    M+ the group's summed aggregate [|C|, d]."""
    check_group(hidden, unembed, tokens, mask, temperature=temperature, token_logprobs=token_logprobs)
    aggregate, hidden, tokens, mask, token_logprobs = on_device(unembed.device, aggregate, hidden, tokens, mask,
                                                                token_logprobs)
    dtype = work_dtype(hidden)
    transform = as_transform(logit_transform)
    scores = torch.zeros(tokens.shape, dtype=dtype, device=hidden.device)
    rows = hidden[mask].to(dtype)
    if rows.shape[0] == 0:
        return scores
    row_tokens = tokens[mask]
    n_columns, token_column, _ = column_positions(row_tokens, columns, unembed.shape[0])
    if aggregate.shape != (n_columns, hidden.shape[-1]):
        raise ValueError(f"aggregate must have shape [{n_columns}, {hidden.shape[-1]}] (columns x d), "
                         f"got {tuple(aggregate.shape)}")
    lse = token_log_normalizer(rows, row_tokens, unembed, temperature=temperature, budget=budget, transform=transform,
                               token_logprobs=None if token_logprobs is None else token_logprobs[mask])
    values = torch.zeros(rows.shape[0], dtype=dtype, device=hidden.device)
    chunk = max(1, budget // rows.shape[0])
    for start in range(0, n_columns, chunk):
        ids = torch.arange(start, min(start + chunk, n_columns), device=hidden.device) if columns is None \
            else columns[start:start + chunk]
        _, errors = _errors_and_probs(rows, row_tokens, unembed, ids, token_column, start, lse, temperature, dtype,
                                      transform)
        # PAPER (NTHR score): s(t) = g_t^T M+ h_t, summed over column chunks
        values += (errors * (rows @ aggregate[start:start + ids.numel()].to(dtype).T)).sum(1)
    scores[mask] = values
    return scores
