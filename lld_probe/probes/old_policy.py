"""The old policy's view of a generation batch: sequence log-likelihoods and the NTHR scores, anchors,
threshold and selection of every group (PAPER Sec. 4), exact also when a group is split across processes.

A whole group is scored on its process with lld_probe.core.nthr_token_scores. A split group is scored
from its positive aggregate M+ (lld_probe.core.nthr_parts): the processes agree on the group's columns
(V*: the union of its token ids), sum their parts of M+, score their own tokens, and take the minimum of
the correct responses' anchors over processes for tau.
"""

from __future__ import annotations

import math

import torch

from ..core import (interaction_scores, nthr_threshold, nthr_token_scores, positive_aggregate, response_anchors,
                    scores_from_aggregate, select_above, sequence_logprob)
from .records import GenerationBatch, OldPolicyScores
from .settings import ProbeSettings


def score_old_policy(generation: GenerationBatch, token_logps, entropy, hidden, unembed, settings: ProbeSettings,
                     comm, *, temperature: float) -> OldPolicyScores:
    """token_logps, entropy [B, T] and hidden [B, T, d] of the old policy, rows in generation order."""
    batch = generation.batch
    token_logps = token_logps.float().cpu().masked_fill(~batch.mask, 0.0)
    hidden = hidden.float().to(unembed.device)
    scores = torch.zeros_like(token_logps)
    selected = torch.zeros_like(batch.mask)
    taus = {}
    parts = generation.layout.groups()
    for part in parts:
        if not part.whole:
            continue
        rows = part.local
        group = nthr_token_scores(hidden[rows], unembed, batch.tokens[rows], batch.mask[rows],
                                  generation.correct[rows], temperature=temperature, vocab=settings.nthr_vocab,
                                  anchor_self=settings.nthr_anchor_self, token_logprobs=token_logps[rows])
        tau = nthr_threshold(group.anchors, generation.correct[rows], settings.nthr_beta)
        scores[rows] = group.scores.cpu()
        selected[rows] = select_above(group.scores, batch.mask[rows], generation.correct[rows], tau).cpu()
        taus[part.group] = tau
    if generation.layout.splits_groups:
        _score_split_groups(generation, [p for p in parts if not p.whole], token_logps, hidden, unembed, settings,
                            comm, temperature, scores, selected, taus)
    return OldPolicyScores(token_logps=token_logps, logp_before=sequence_logprob(token_logps, batch.mask),
                           entropy=entropy.float().cpu().masked_fill(~batch.mask, 0.0), scores=scores,
                           selected=selected, taus=taus)


def split_group_indices(layout) -> list[int]:
    """The groups of the global batch that straddle a process boundary (the same list on every process)."""
    boundaries = [rank * layout.local_rows for rank in range(1, layout.world_size)]
    return sorted({b // layout.group_size for b in boundaries if b % layout.group_size})


def _score_split_groups(generation, parts, token_logps, hidden, unembed, settings, comm, temperature,
                        scores, selected, taus) -> None:
    """Fill scores, selection and tau of this process's parts of split groups (collectives on every process)."""
    batch, correct = generation.batch, generation.correct
    split = split_group_indices(generation.layout)
    mine = {part.group: part for part in parts}
    # 1. the columns of each split group: V* = union of its token ids over processes, or the full vocabulary
    columns = {g: None for g in split}
    if settings.nthr_vocab == "group":
        local_ids = {g: torch.unique(batch.tokens[p.local][batch.mask[p.local]]).tolist() for g, p in mine.items()}
        gathered = comm.all_gather_object(local_ids)
        for g in split:
            union = sorted({i for ids in gathered for i in ids.get(g, [])})
            columns[g] = torch.tensor(union, dtype=torch.long, device=unembed.device)
    # 2. the positive aggregate M+ of every split group, summed over processes in one all-reduce
    dim = hidden.shape[-1]
    sizes = [(unembed.shape[0] if columns[g] is None else columns[g].numel()) * dim for g in split]
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    flat = torch.zeros(sum(sizes), dtype=dtype, device=unembed.device)
    offsets = dict(zip(split, [sum(sizes[:i]) for i in range(len(split))]))
    for g, part in mine.items():
        rows = part.local
        aggregate = positive_aggregate(hidden[rows], unembed, batch.tokens[rows], batch.mask[rows], correct[rows],
                                       columns=columns[g], temperature=temperature, token_logprobs=token_logps[rows])
        flat[offsets[g]: offsets[g] + aggregate.numel()] = aggregate.flatten().to(dtype)
    flat = comm.all_reduce(flat, "sum")
    # 3. scores of this process's tokens, anchors of its correct responses, tau = beta * min over processes
    minimum = torch.full((len(split),), math.inf, dtype=torch.float64)
    scores_of = {}
    for g, part in mine.items():
        rows = part.local
        size = sizes[split.index(g)]
        aggregate = flat[offsets[g]: offsets[g] + size].view(-1, dim)
        group_scores = scores_from_aggregate(aggregate, hidden[rows], unembed, batch.tokens[rows], batch.mask[rows],
                                             columns=columns[g], temperature=temperature,
                                             token_logprobs=token_logps[rows])
        anchor_scores = group_scores if settings.nthr_anchor_self else \
            group_scores - _own_contribution(hidden[rows], unembed, batch.tokens[rows], batch.mask[rows],
                                             correct[rows], columns[g], temperature, token_logps[rows])
        anchors = response_anchors(anchor_scores, batch.mask[rows], correct[rows])
        valid = anchors[~torch.isnan(anchors)]
        if valid.numel():
            minimum[split.index(g)] = float(valid.min())
        scores[rows] = group_scores.float().cpu()
        scores_of[g] = group_scores
    minimum = comm.all_reduce(minimum, "min")
    for g, part in mine.items():
        lowest = float(minimum[split.index(g)])
        if settings.nthr_beta == -math.inf:
            tau = -math.inf
        elif math.isinf(lowest):
            tau = math.nan                   # no correct response in the whole group
        else:
            # the group's threshold from the minimum anchor over all processes (PAPER: tau = beta * min s+bar)
            tau = nthr_threshold(torch.tensor([lowest]), torch.tensor([True]), settings.nthr_beta)
        rows = part.local
        selected[rows] = select_above(scores_of[g], batch.mask[rows], correct[rows], tau).cpu()
        taus[g] = tau


def _own_contribution(hidden, unembed, tokens, mask, correct, columns, temperature, token_logps):
    """For each correct response, its tokens' scores under M+ of that response alone (a response never
    spans processes): removed from the anchor when anchors exclude self-interaction."""
    own = torch.zeros(tokens.shape, dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32)
    for row in correct.nonzero().squeeze(1).tolist():
        alone = torch.zeros_like(mask)
        alone[row] = mask[row]
        own[row] = interaction_scores(hidden, unembed, tokens, alone, alone.to(hidden.dtype), temperature=temperature,
                                      columns=columns, token_logprobs=token_logps)[row]
    return own
