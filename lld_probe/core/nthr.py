"""NTHR: Negative Token Hidden Reward scores, anchors and token selection (PAPER Sec. 4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import check_shape, check_tensor, on_device
from .group import check_group, vocab_columns
from .interaction import DEFAULT_BUDGET, interaction_scores


@dataclass
class NTHRScores:
    """scores [G, T]: g_t^T M+ h_t for every masked token (0 off mask);
    anchors [G]: s+bar of each correct response, NaN for incorrect ones."""

    scores: torch.Tensor
    anchors: torch.Tensor


def nthr_token_scores(hidden, unembed, tokens, mask, correct, *, temperature=1.0, vocab="full",
                      anchor_self=True, token_logprobs=None, method="auto",
                      budget=DEFAULT_BUDGET, logit_transform=None) -> NTHRScores:
    """NTHR score of every response token of one group, and the anchors of the correct responses.

    hidden [G, T, d]: final hidden state (input of lm_head) that predicts tokens[g, t];
    unembed [V, d]: lm_head weight; tokens [G, T] long; mask [G, T] bool (response tokens);
    correct [G] bool.
    vocab: "full" (exact) or "group" (the paper's V*: error vectors restricted to the tokens seen in
    the group, full-vocabulary normaliser kept).
    anchor_self: include a correct response's interaction with itself in its anchor (paper
    default); False = leave-one-response-out (its anchor uses the other correct responses only).
    token_logprobs [G, T] (optional): old log-probs of tokens at this temperature; supplies the
    softmax normaliser so that no pass over the full vocabulary is needed for vocab="group".
    method: "auto" | "outer" | "pairwise" (exact either way; see lld_probe.core.interaction).
    logit_transform: the model's map from W h to its logits (lld_probe.core.logit_transform; None: identity).
    Memory: O(budget) extra elements plus |V|/chunk-independent terms; see interaction_scores.
    """
    check_group(hidden, unembed, tokens, mask, correct, temperature=temperature,
                token_logprobs=token_logprobs)
    hidden, tokens, mask, correct, token_logprobs = on_device(unembed.device, hidden, tokens, mask, correct,
                                                              token_logprobs)
    columns = vocab_columns(tokens, mask, vocab)
    correct_tokens = mask & correct[:, None]
    # PAPER (NTHR score): s(k') = sum_{i, k in y+_i} alpha(k, k') <h_k, h_k'> = g_k'^T M+ h_k'
    scores = interaction_scores(hidden, unembed, tokens, mask, correct_tokens.to(hidden.dtype),
                                temperature=temperature, columns=columns,
                                token_logprobs=token_logprobs, method=method, budget=budget,
                                logit_transform=logit_transform)
    anchor_scores = scores
    if not anchor_self:
        anchor_scores = scores.clone()
        for row in correct.nonzero().squeeze(1).tolist():
            own = torch.zeros_like(mask)
            own[row] = mask[row]
            # remove response i''s own contribution: M+ without the tokens of i'
            self_part = interaction_scores(hidden, unembed, tokens, own, own.to(hidden.dtype),
                                           temperature=temperature, columns=columns,
                                           token_logprobs=token_logprobs, method=method, budget=budget,
                                           logit_transform=logit_transform)
            anchor_scores[row] -= self_part[row]
    return NTHRScores(scores=scores, anchors=response_anchors(anchor_scores, mask, correct))


def response_anchors(anchor_scores: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """[G]: the mean score over each correct response's tokens, NaN for incorrect or empty responses."""
    mask, correct = on_device(anchor_scores.device, mask, correct)
    lengths = mask.sum(1)
    # PAPER (anchor): s+bar(i') = mean over tokens k'' of y+_i' of g_k''^T M+ h_k''
    anchors = anchor_scores.sum(1) / lengths.to(anchor_scores.dtype)
    return torch.where(correct & (lengths > 0), anchors, torch.full_like(anchors, math.nan))


def nthr_threshold(anchors: torch.Tensor, correct: torch.Tensor, beta: float = 1.0) -> float:
    """tau = beta * min over correct responses of s+bar (PAPER: threshold); -inf when beta = -inf,
    NaN when no correct response has an anchor."""
    if beta == -math.inf:
        return -math.inf
    correct, = on_device(anchors.device, correct)
    valid = anchors[correct & ~torch.isnan(anchors)]
    if valid.numel() == 0:
        return math.nan
    return float(beta * valid.min())


def nthr_select(scores, mask, correct, anchors, *, beta=1.0) -> torch.Tensor:
    """Tokens of incorrect responses whose score exceeds tau = beta * min(anchors of correct
    responses) (PAPER: V-_j = {k' in y-_j : s-(k') > tau}). beta = -inf selects every incorrect
    token; a group without a correct response selects nothing (unless beta = -inf)."""
    check_tensor("scores", scores, ndim=2, dtype="float")
    check_tensor("mask", mask, ndim=2, dtype="bool")
    check_shape("mask", mask, tuple(scores.shape))
    check_tensor("correct", correct, ndim=1, dtype="bool")
    check_shape("correct", correct, (scores.shape[0],))
    check_tensor("anchors", anchors, ndim=1, dtype="float")
    check_shape("anchors", anchors, (scores.shape[0],))
    if not isinstance(beta, (int, float)) or math.isnan(beta) or beta == math.inf:
        raise ValueError(f"beta must be a finite number or -inf, got {beta!r}")
    return select_above(scores, mask, correct, nthr_threshold(anchors, correct, beta))


def select_above(scores: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor, tau: float) -> torch.Tensor:
    """V-_j = {k' in y-_j : s-(k') > tau} for a threshold already computed (nthr_threshold); a NaN tau
    (no correct response) selects nothing."""
    mask, correct = on_device(scores.device, mask, correct)
    if math.isnan(tau):
        return torch.zeros_like(mask)
    return mask & ~correct[:, None] & (scores > tau)
