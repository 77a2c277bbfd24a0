"""The old policy's view of a generation batch: sequence log-likelihoods and the NTHR scores, anchors,
threshold and selection of every group (PAPER Sec. 4), exact also when a group is split across processes.

A whole group is scored on its process with lld_probe.core.nthr_token_scores. A split group is scored
from its positive aggregate M+ (lld_probe.core.nthr_parts): the processes agree on the group's columns
(V*: the union of its token ids), sum their parts of M+, score their own tokens, and take the minimum of
the correct responses' anchors over processes for tau.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core import (interaction_scores, nthr_threshold, nthr_token_scores, positive_aggregate, response_anchors,
                    scores_from_aggregate, select_above, sequence_logprob)
from ..scoring.logit_transform import check_head_follows
from .records import GenerationBatch, OldPolicyScores
from .settings import ProbeSettings


def score_old_policy(generation: GenerationBatch, token_logps, entropy, hidden, unembed, settings: ProbeSettings,
                     comm, *, temperature: float, logit_transform=None) -> OldPolicyScores:
    """token_logps, entropy [B, T] and hidden [B, T, d] of the old policy, rows in generation order. Only the
    measured tokens (batch.measured) enter: M+, anchors, tau, the selection and the sums; the others (a tool's
    output) are context the forward saw, with 0 log-prob, score and entropy here. logit_transform: the
    model's (lld_probe.scoring.logit_transform_of; None: logits = W h)."""
    batch = generation.batch
    measured = batch.measured
    # the scores below recompute pi from (h, W, f): refuse a model whose log-probs do not follow from them
    check_head_follows(hidden, unembed, batch.tokens, measured & batch.mask, token_logps, temperature=temperature,
                       transform=logit_transform)
    token_logps = token_logps.float().cpu().masked_fill(~measured, 0.0)
    hidden = hidden.float().to(unembed.device)
    scores = torch.zeros_like(token_logps)
    selected = torch.zeros_like(measured)
    taus = {}
    parts = generation.layout.groups()
    for part in parts:
        if not part.whole:
            continue
        rows = part.local
        group = nthr_token_scores(hidden[rows], unembed, batch.tokens[rows], measured[rows],
                                  generation.correct[rows], temperature=temperature, vocab=settings.nthr_vocab,
                                  anchor_self=settings.nthr_anchor_self, token_logprobs=token_logps[rows],
                                  logit_transform=logit_transform)
        tau = nthr_threshold(group.anchors, generation.correct[rows], settings.nthr_beta)
        scores[rows] = group.scores.cpu()
        selected[rows] = select_above(group.scores, measured[rows], generation.correct[rows], tau).cpu()
        taus[part.group] = tau
    if generation.layout.splits_groups:
        _score_split_groups(generation, [p for p in parts if not p.whole], token_logps, hidden, unembed, settings,
                            comm, temperature, scores, selected, taus, logit_transform)
    logp_before = sequence_logprob(token_logps, measured)
    logp_before = logp_before.masked_fill(~measured.any(1), math.nan)    # nothing measured: not 0, unknown
    return OldPolicyScores(token_logps=token_logps, logp_before=logp_before,
                           entropy=entropy.float().cpu().masked_fill(~measured, 0.0), scores=scores,
                           nthr_selected=selected, taus=taus)


def split_group_indices(layout) -> list[int]:
    """The groups of the global batch that straddle a process boundary (the same list on every process)."""
    boundaries = [rank * layout.local_rows for rank in range(1, layout.world_size)]
    return sorted({b // layout.group_size for b in boundaries if b % layout.group_size})


def _score_split_groups(generation, parts, token_logps, hidden, unembed, settings, comm, temperature,
                        scores, selected, taus, logit_transform=None) -> None:
    """Fill scores, selection and tau of this process's parts of split groups (collectives on every process)."""
    batch = generation.batch
    layout = generation.layout
    sharing = {g: layout.ranks_of_group(g) for g in split_group_indices(layout)}
    split = score_split_groups({part.group: part.local for part in parts}, sharing,
                               batch.tokens, batch.measured, generation.correct, token_logps, hidden, unembed,
                               vocab=settings.nthr_vocab, anchor_self=settings.nthr_anchor_self,
                               beta=settings.nthr_beta, temperature=temperature, comm=comm,
                               logit_transform=logit_transform)
    for part in parts:
        rows = part.local
        scores[rows] = split.scores[rows].float().cpu()
        selected[rows] = split.selected[rows]
    taus.update(split.taus)


@dataclass(frozen=True)
class SplitGroupScores:
    scores: torch.Tensor       # [B, T] (float64 for float64 inputs), 0 outside the pieces
    anchors: torch.Tensor      # [B] NaN outside the pieces and for incorrect responses
    selected: torch.Tensor     # [B, T] bool
    taus: dict                 # group -> tau, for the groups of the pieces


def score_split_groups(pieces: dict, sharing: dict, tokens, mask, correct, token_logps, hidden, unembed, *,
                       vocab: str, anchor_self: bool, beta: float, temperature: float, comm,
                       logit_transform=None) -> SplitGroupScores:
    """NTHR of groups spread over processes, exactly as on one process. pieces: group -> this process's rows
    of it (a slice); sharing: every split group -> the processes that hold it (the same on every process).
    Each process calls this with its own pieces (none for the groups it does not hold); the reductions of a
    group run among the processes that share it, in ascending group order."""
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    comm.prepare_groups(sharing.values())
    # 1. the columns of each group: V* = the union of its token ids over processes, or the full vocabulary
    columns = {g: None for g in sharing}
    if vocab == "group":
        local_ids = {g: torch.unique(tokens[rows][mask[rows]]).tolist() for g, rows in pieces.items()}
        gathered = comm.all_gather_object(local_ids, purpose="nthr")
        for g in sharing:
            union = sorted({i for ids in gathered for i in ids.get(g, [])})
            columns[g] = torch.tensor(union, dtype=torch.long, device=unembed.device)
    mine = sorted(pieces)
    # 2. the positive aggregate M+ of each group, summed over the processes that hold it
    aggregates = {}
    for g in mine:
        rows = pieces[g]
        part = positive_aggregate(hidden[rows], unembed, tokens[rows], mask[rows], correct[rows],
                                  columns=columns[g], temperature=temperature, token_logprobs=token_logps[rows],
                                  logit_transform=logit_transform)
        aggregates[g] = comm.all_reduce(part.to(dtype), "sum", purpose="nthr", ranks=sharing[g])
    # 3. this process's scores and anchors; the group's minimum anchor over its processes
    scores = torch.zeros(tokens.shape, dtype=dtype)
    anchors = torch.full((tokens.shape[0],), math.nan, dtype=dtype)
    lowest = {}
    for g in mine:
        rows = pieces[g]
        group_scores = scores_from_aggregate(aggregates[g], hidden[rows], unembed, tokens[rows], mask[rows],
                                             columns=columns[g], temperature=temperature,
                                             token_logprobs=token_logps[rows], logit_transform=logit_transform)
        anchor_scores = group_scores if anchor_self else group_scores - _own_contribution(
            hidden[rows], unembed, tokens[rows], mask[rows], correct[rows], columns[g], temperature, token_logps[rows],
            logit_transform)
        scores[rows] = group_scores.cpu().to(dtype)
        anchors[rows] = response_anchors(anchor_scores, mask[rows], correct[rows]).cpu().to(dtype)
        valid = anchors[rows][~torch.isnan(anchors[rows])]
        local_min = torch.tensor([float(valid.min()) if valid.numel() else math.inf], dtype=torch.float64)
        lowest[g] = float(comm.all_reduce(local_min, "min", purpose="nthr", ranks=sharing[g])[0])
    # 4. tau = beta * min anchor of the whole group (PAPER: threshold), then the selection
    selected = torch.zeros(tokens.shape, dtype=torch.bool)
    taus = {}
    for g in mine:
        rows = pieces[g]
        has_correct = not math.isinf(lowest[g])
        anchor = torch.tensor([lowest[g] if has_correct else math.nan], dtype=torch.float64)
        taus[g] = nthr_threshold(anchor, torch.tensor([has_correct]), beta)
        selected[rows] = select_above(scores[rows], mask[rows].cpu(), correct[rows].cpu(), taus[g])
    return SplitGroupScores(scores, anchors, selected, taus)


def _own_contribution(hidden, unembed, tokens, mask, correct, columns, temperature, token_logps,
                      logit_transform=None):
    """For each correct response, its tokens' scores under M+ of that response alone (a response never
    spans processes): removed from the anchor when anchors exclude self-interaction."""
    own = torch.zeros(tokens.shape, dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32,
                      device=unembed.device)
    for row in correct.nonzero().squeeze(1).tolist():
        alone = torch.zeros_like(mask)
        alone[row] = mask[row]
        own[row] = interaction_scores(hidden, unembed, tokens, alone, alone.to(hidden.dtype), temperature=temperature,
                                      columns=columns, token_logprobs=token_logps,
                                      logit_transform=logit_transform)[row]
    return own
