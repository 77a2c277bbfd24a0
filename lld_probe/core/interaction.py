"""The token-interaction kernel behind NTHR, GWHES and the first-order likelihood prediction.

For query tokens t and weighted source tokens k of one group it computes
    s(t) = sum_k w_k * alpha(k, t) * <h_k, h_t>  =  g_t^T M h_t,   M = sum_k w_k g_k h_k^T,
with g_k = e_{y_k} - pi_k (PAPER: prediction error), pi_k = softmax(W h_k / temperature) and
alpha(k, t) = <g_k, g_t> (PAPER: token pair similarity). For a model whose logits are an elementwise
transform f(W h) (lld_probe.core.logit_transform: soft-capping, a scale), pi_k = softmax(f(W h_k) / temperature)
and g_k = (e_{y_k} - pi_k) * f'(W h_k), by the chain rule: then g_k h_k^T is still the gradient of log pi(y_k)
with respect to W (times the temperature), and s(t) the inner product of two such gradients. Restricting g to a set of vocabulary
columns C (the paper's V*) keeps the full-vocabulary normaliser of pi (no renormalisation).

Exact, and chunked over the vocabulary so that no T x T x V (nor N x V) tensor is ever built.
Two exact evaluation orders, chosen by shape (method="auto"):
  "outer":    M_c = G_c^T H per vocabulary chunk, then g_t^T M_c h_t   ~ (N_U + N_s + N_q) |C| d flops
  "pairwise": sum_k w_k alpha(k, t) <h_k, h_t> with alpha expanded    ~ N_U |C| d + N_s N_q |C| flops
(N_s sources, N_q queries, N_U their union); pairwise is cheaper when N_s N_q < (N_s + N_q) d.
"""

from __future__ import annotations

import torch

from ._checks import on_device
from .logit_transform import IDENTITY, LogitTransform, as_transform

METHODS = ("auto", "outer", "pairwise")
DEFAULT_BUDGET = 1 << 23  # elements of the largest temporary ([tokens x vocabulary chunk]): 32 MB in float32


def work_dtype(hidden: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (tests); everything else is computed in float32."""
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


def log_normalizer(hidden_rows: torch.Tensor, unembed: torch.Tensor, *, temperature: float,
                   budget: int = DEFAULT_BUDGET, transform: LogitTransform = IDENTITY) -> torch.Tensor:
    """logsumexp_v (f(W h) / temperature)_v for rows of hidden [N, d], chunked over the vocabulary."""
    n_rows = hidden_rows.shape[0]
    dtype = hidden_rows.dtype
    result = torch.full((n_rows,), float("-inf"), dtype=dtype, device=hidden_rows.device)
    if n_rows == 0:
        return result
    chunk = max(1, budget // max(n_rows, 1))
    for start in range(0, unembed.shape[0], chunk):
        logits = transform.logits(hidden_rows @ unembed[start:start + chunk].to(dtype).T) / temperature
        result = torch.logaddexp(result, torch.logsumexp(logits, dim=1))
    return result


def token_log_normalizer(hidden_rows: torch.Tensor, row_tokens: torch.Tensor, unembed: torch.Tensor, *,
                         temperature: float, token_logprobs: torch.Tensor | None = None,
                         budget: int = DEFAULT_BUDGET, transform: LogitTransform = IDENTITY) -> torch.Tensor:
    """log-normaliser of pi over the FULL vocabulary (never renormalised to a column set) for rows of
    hidden [N, d]: read from the sampled tokens' log-probs when given (logit minus log-prob), else a
    chunked pass over the vocabulary."""
    if token_logprobs is not None:
        own_logit = transform.logits((hidden_rows * unembed[row_tokens].to(hidden_rows.dtype)).sum(1)) / temperature
        return own_logit - token_logprobs.to(hidden_rows.dtype)
    return log_normalizer(hidden_rows, unembed, temperature=temperature, budget=budget, transform=transform)


def column_positions(row_tokens: torch.Tensor, columns: torch.Tensor | None, vocab_size: int):
    """(number of columns, position of each row's token among the columns or -1, whether it is there)."""
    if columns is None:
        return vocab_size, row_tokens, torch.ones_like(row_tokens, dtype=torch.bool)
    n_columns = columns.numel()
    position = torch.searchsorted(columns, row_tokens).clamp(max=max(n_columns - 1, 0))
    in_columns = columns[position] == row_tokens
    return n_columns, torch.where(in_columns, position, torch.full_like(position, -1)), in_columns


def choose_method(n_sources: int, n_queries: int, dim: int) -> str:
    """The cheaper exact evaluation order for these sizes (see module docstring)."""
    return "pairwise" if n_sources * n_queries < (n_sources + n_queries) * dim else "outer"


def interaction_scores(hidden: torch.Tensor, unembed: torch.Tensor, tokens: torch.Tensor,
                       query_mask: torch.Tensor, source_weight: torch.Tensor, *,
                       temperature: float = 1.0, columns: torch.Tensor | None = None,
                       token_logprobs: torch.Tensor | None = None, method: str = "auto",
                       budget: int = DEFAULT_BUDGET, logit_transform: LogitTransform | None = None) -> torch.Tensor:
    """s(t) = g_t^T (sum_k w_k g_k h_k^T) h_t for every query token; 0 elsewhere. Returns [G, T].

    hidden [G, T, d] (aligned: hidden[g, t] predicts tokens[g, t]); unembed [V, d]; tokens [G, T];
    query_mask [G, T] bool; source_weight [G, T] float (0 = not a source), or [K, G, T] for K weightings
    of the same sources at once (the vocabulary pass is shared; returns [K, G, T]).
    columns: sorted vocabulary ids that g is restricted to (None = the full vocabulary).
    token_logprobs: log pi(tokens) at this temperature, [G, T]; when given, the softmax normaliser is
    read from it (logit of the sampled token minus its log-prob) instead of a pass over |V|.
    logit_transform: the model's map from W h to its logits (None: logits = W h); see the module docstring.
    Memory: besides the inputs, O(budget + |C_chunk| d + N_s N_q [pairwise only]) elements, where
    |C_chunk| = budget / N_U; nothing scales with |V| x T.
    Arguments are validated by the public callers.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    transform = as_transform(logit_transform)
    hidden, tokens, query_mask, source_weight, columns, token_logprobs = on_device(
        unembed.device, hidden, tokens, query_mask, source_weight, columns, token_logprobs)
    dtype = work_dtype(hidden)
    n_groups, length = tokens.shape
    stacked = source_weight.dim() == 3
    weightings = source_weight if stacked else source_weight[None]      # [K, G, T]
    source_mask = (weightings != 0).any(0)
    union_mask = query_mask | source_mask
    scores = torch.zeros((weightings.shape[0], n_groups, length), dtype=dtype, device=hidden.device)
    if not bool(query_mask.any()) or not bool(source_mask.any()):
        return scores if stacked else scores[0]

    union_hidden = hidden[union_mask].to(dtype)                  # [N_U, d]
    union_tokens = tokens[union_mask]                            # [N_U]
    union_weight = weightings[:, union_mask].to(dtype)           # [K, N_U]
    is_source = source_mask[union_mask]
    is_query = query_mask[union_mask]
    source_idx = is_source.nonzero().squeeze(1)
    query_idx = is_query.nonzero().squeeze(1)
    n_union, dim = union_hidden.shape

    lse = token_log_normalizer(union_hidden, union_tokens, unembed, temperature=temperature,
                               token_logprobs=None if token_logprobs is None else token_logprobs[union_mask],
                               budget=budget, transform=transform)
    n_columns, token_column, in_columns = column_positions(union_tokens, columns, unembed.shape[0])

    if method == "auto":
        method = choose_method(source_idx.numel(), query_idx.numel(), dim)
    chunk = max(1, budget // max(n_union, 1))
    query_scores = torch.zeros((weightings.shape[0], query_idx.numel()), dtype=dtype, device=hidden.device)
    prob_products = None
    if method == "pairwise":
        prob_products = torch.zeros((source_idx.numel(), query_idx.numel()), dtype=dtype, device=hidden.device)

    for start in range(0, n_columns, chunk):
        stop = min(start + chunk, n_columns)
        ids = torch.arange(start, stop, device=hidden.device) if columns is None else columns[start:stop]
        weight_chunk = unembed[ids].to(dtype)                                     # [Vc, d]
        products = union_hidden @ weight_chunk.T                                  # [N_U, Vc] = W_v h_k
        # pi_k(v) = exp(f(W_v h_k) / temperature - lse_k) for v in this chunk
        probs = torch.exp(transform.logits(products) / temperature - lse[:, None])
        slopes = transform.slope(products)                                        # f'(W_v h_k), None if f = id
        local = token_column - start
        hit = (local >= 0) & (local < stop - start)
        if method == "outer":
            _add_outer_chunk(query_scores, probs, local, hit, union_hidden, union_weight, source_idx, query_idx,
                             slopes)
        else:
            # sum_{v in C} pi_k(v) f'_k(v) pi_t(v) f'_t(v), accumulated over chunks
            weighted = probs if slopes is None else probs * slopes
            prob_products += weighted[source_idx] @ weighted[query_idx].T

    if method == "pairwise":
        query_scores = _pairwise_scores(prob_products, union_hidden, union_tokens, union_weight, in_columns, lse,
                                        unembed, source_idx, query_idx, temperature, transform)

    flat = scores[:, union_mask]
    flat[:, query_idx] = query_scores
    scores[:, union_mask] = flat
    return scores if stacked else scores[0]


def _add_outer_chunk(query_scores, probs, local, hit, union_hidden, union_weight, source_idx, query_idx,
                     slopes=None) -> None:
    """"outer" order, one vocabulary chunk: add g_t^T M_c h_t to every query's score, per weighting."""
    # g_k restricted to the chunk: e_{y_k} - pi_k (times f'(W h_k) for a logit transform f)
    source_errors = -probs[source_idx]
    rows = hit[source_idx].nonzero().squeeze(1)
    source_errors[rows, local[source_idx][rows]] += 1.0
    if slopes is not None:
        source_errors = source_errors * slopes[source_idx]
    query_rows = hit[query_idx].nonzero().squeeze(1)
    for weighting, weight in enumerate(union_weight):
        # M_c = sum_k w_k g_k h_k^T  (PAPER: M+ = sum over correct tokens g_k h_k^T)
        matrix = (source_errors * weight[source_idx, None]).T @ union_hidden[source_idx]  # [Vc, d]
        projected = union_hidden[query_idx] @ matrix.T                     # [N_q, Vc] = M_c h_t
        if slopes is not None:                                             # g_t carries f'(W h_t) too
            projected = projected * slopes[query_idx]
        # s(t) += g_t^T M_c h_t = (M_c h_t)[y_t] - <pi_t, M_c h_t>
        query_scores[weighting] -= (probs[query_idx] * projected).sum(1)
        query_scores[weighting, query_rows] += projected[query_rows, local[query_idx][query_rows]]


def _pairwise_scores(prob_products, union_hidden, union_tokens, union_weight, in_columns, lse, unembed, source_idx,
                     query_idx, temperature, transform: LogitTransform = IDENTITY) -> torch.Tensor:
    """"pairwise" order: [K, N_q] scores from the accumulated sum_{v in C} pi_k(v) f'_k(v) pi_t(v) f'_t(v)."""
    dtype = union_hidden.dtype
    src_hidden, qry_hidden = union_hidden[source_idx], union_hidden[query_idx]
    src_tokens, qry_tokens = union_tokens[source_idx], union_tokens[query_idx]
    src_in, qry_in = in_columns[source_idx], in_columns[query_idx]
    # pi_k(y_t) (only where y_t in C) and pi_t(y_k) (only where y_k in C)
    u_src_at_qry = src_hidden @ unembed[qry_tokens].to(dtype).T                  # W_{y_t} h_k  [N_s, N_q]
    u_qry_at_src = (qry_hidden @ unembed[src_tokens].to(dtype).T).T              # W_{y_k} h_t  [N_s, N_q]
    p_src_at_qry = torch.exp(transform.logits(u_src_at_qry) / temperature - lse[source_idx, None]) * qry_in[None, :]
    p_qry_at_src = torch.exp(transform.logits(u_qry_at_src) / temperature - lse[query_idx][None, :]) * src_in[:, None]
    same = (src_tokens[:, None] == qry_tokens[None, :]) & src_in[:, None]
    if transform.is_identity:
        # PAPER: alpha(k,k') = 1[y_k = y_k'] - pi_k(y_k') - pi_k'(y_k) + <pi_k, pi_k'>
        alpha = same.to(dtype) - p_src_at_qry - p_qry_at_src + prob_products
    else:
        # <g_k, g_t> with g = (e_y - pi) * f'(u), expanded (chain rule through the logit transform f):
        # 1[y_k = y_t] f'_k(y_k) f'_t(y_t) - pi_k(y_t) f'_k(y_t) f'_t(y_t) - pi_t(y_k) f'_t(y_k) f'_k(y_k)
        # + sum_v pi_k(v) f'_k(v) pi_t(v) f'_t(v)
        own_src = transform.slope((src_hidden * unembed[src_tokens].to(dtype)).sum(1))   # f'_k(y_k) [N_s]
        own_qry = transform.slope((qry_hidden * unembed[qry_tokens].to(dtype)).sum(1))   # f'_t(y_t) [N_q]
        alpha = (same.to(dtype) * own_src[:, None] * own_qry[None, :]
                 - p_src_at_qry * transform.slope(u_src_at_qry) * own_qry[None, :]
                 - p_qry_at_src * transform.slope(u_qry_at_src) * own_src[:, None] + prob_products)
    kernel = alpha * (src_hidden @ qry_hidden.T)                              # [N_s, N_q]
    return union_weight[:, source_idx] @ kernel                              # [K, N_q]
