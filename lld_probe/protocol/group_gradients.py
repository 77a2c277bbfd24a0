"""Gradients of several per-token weightings of one group's GRPO loss at the same parameters.

The token-mean loss is a sum over rows divided by the group's token count, so a method's gradient is
the sum of its gradients on disjoint row subsets. The protocol's methods differ on some rows only
(Pos Only, NTHR and Random change the incorrect responses; every method weights the correct ones
alike): each subset gets one forward and one backward per distinct weighting on it, instead of one
backward of the whole group per method. For a group with n incorrect responses out of G and the four
methods, that is G + 2n rows backpropagated instead of 4G.
"""

from __future__ import annotations

import torch

from ..scoring import ScoredGroup, forward_logps
from .loss import clipped_surrogate_loss


def subset_forwards(model, batch, subsets, *, temperature: float, with_scores: bool):
    """[(rows, ScoredGroup)]: a forward with gradients of each row subset (index tensors)."""
    return [(rows, forward_logps(model, batch.select(rows), temperature=temperature, with_hidden=with_scores,
                                 with_entropy=with_scores)) for rows in subsets if len(rows)]


def merge_scores(forwards, batch) -> ScoredGroup:
    """The subsets' detached scores put back in the group's row order: [B, T] (hidden [B, T, d])."""
    token_logps = torch.zeros(batch.tokens.shape)
    entropy = torch.zeros(batch.tokens.shape)
    hidden = None
    for rows, scored in forwards:
        if hidden is None:
            hidden = torch.zeros((*batch.tokens.shape, scored.hidden.shape[-1]))
        token_logps[rows] = scored.token_logps.detach().float().cpu()
        entropy[rows] = scored.entropy.float().cpu()
        hidden[rows] = scored.hidden.float().cpu()
    return ScoredGroup(token_logps, hidden, entropy)


def weighting_gradients(parameters, forwards, old_token_logps, weightings: dict, mask, *, clip_eps: float):
    """{name: (loss, gradients)} for every per-token weighting [B, T] of the group's clipped surrogate loss
    (token mean over the whole group), from the subset forwards. Identical weightings of a subset share
    one backward; a subset on which a weighting is zero contributes nothing. Gradients are None where
    no row contributes (no update)."""
    total_tokens = mask.sum().clamp(min=1)
    jobs = []                       # (forward index, subset weights, names)
    for index, (rows, _) in enumerate(forwards):
        distinct = []
        for name, weights in weightings.items():
            subset = weights[rows]
            if not bool((subset[mask[rows]] != 0).any()):
                continue
            for entry in distinct:
                if torch.equal(entry[0], subset):
                    entry[1].append(name)
                    break
            else:
                distinct.append((subset, [name]))
        jobs += [(index, subset, names) for subset, names in distinct]
    losses = {name: 0.0 for name in weightings}
    gradients = {name: None for name in weightings}
    for position, (index, subset, names) in enumerate(jobs):
        rows, scored = forwards[index]
        subset_mask = mask[rows].to(scored.token_logps.device)
        # this subset's share of the group's token-mean loss
        loss = clipped_surrogate_loss(scored.token_logps, old_token_logps[rows].to(scored.token_logps.device),
                                      subset.to(scored.token_logps.device), subset_mask,
                                      clip_eps=clip_eps) * subset_mask.sum() / total_tokens
        retain = any(later == index for later, _, _ in jobs[position + 1:])
        grads = torch.autograd.grad(loss, parameters, retain_graph=retain, allow_unused=True)
        for name in names:          # out of place: names sharing a backward must not alias
            losses[name] += float(loss.detach())
            if gradients[name] is None:
                gradients[name] = list(grads)
            else:
                gradients[name] = [b if a is None else a if b is None else a + b
                                   for a, b in zip(gradients[name], grads)]
    return {name: (losses[name], gradients[name]) for name in weightings}
