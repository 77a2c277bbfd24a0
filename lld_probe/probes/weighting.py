"""The method's advantages for a generation batch (lld_probe.core.methods per group), also for groups
split across processes: the group's success rate p comes from the whole group's rewards, and the
random control draws as on one process from every response's length and NTHR count (gathered)."""

from __future__ import annotations

import torch

from ..core import SEQUENCE_LEVEL, method_token_advantages, sequence_advantages
from .records import GenerationBatch, OldPolicyScores
from .settings import ProbeSettings


def random_seed(seed: int, step: int, group: int) -> int:
    """The random control's seed for one group of one step."""
    return hash((seed, step, group)) % (2 ** 31)


def method_weighting(generation: GenerationBatch, old: OldPolicyScores, settings: ProbeSettings, comm):
    """(advantages for the loss: [B] for grpo / pos_only, [B, T] otherwise; tokens scaled by eta [B, T])."""
    method, batch = settings.method, generation.batch
    scaled = torch.zeros_like(old.nthr_selected)
    if method in SEQUENCE_LEVEL:
        return sequence_advantages(method, generation.advantages), scaled
    parts = generation.layout.groups()
    remote = _remote_rows(generation, old, parts, comm) if generation.layout.splits_groups else {}
    per_token = torch.zeros(batch.mask.shape, dtype=generation.advantages.dtype)   # 0 off the measured tokens
    for part in parts:
        rows = part.local
        advantages, mask, correct, selected, local = _whole_group(generation, old, part, remote.get(part.group, {}))
        tokens_adv, scaled_rows = method_token_advantages(
            method, advantages, mask, correct, selected, settings.eta_policy,
            seed=random_seed(settings.seed, generation.step, part.group))
        width = batch.mask.shape[1]
        per_token[rows] = tokens_adv[local, :width].to(per_token.dtype)
        scaled[rows] = scaled_rows[local, :width]
    return per_token, scaled


def _remote_rows(generation, old, parts, comm) -> dict:
    """group -> {response index: (length, NTHR count)} of every process's rows of split groups."""
    batch = generation.batch
    local = {part.group: {part.first_index + i: (int(batch.measured[row].sum()), int(old.nthr_selected[row].sum()))
                          for i, row in enumerate(range(part.local.start, part.local.stop))}
             for part in parts if not part.whole}
    merged: dict = {}
    for rows in comm.all_gather_object(local, purpose="nthr"):
        for group, values in rows.items():
            merged.setdefault(group, {}).update(values)
    return merged


def _whole_group(generation, old, part, remote: dict):
    """The whole group's (advantages [G], measured mask, correct, selected) with this process's rows real and
    the other processes' rows rebuilt as prefixes from their numbers of measured tokens and NTHR counts (the
    random draw of a row depends on nothing else: it permutes the row's measured positions); and the slice
    of this process's rows in it."""
    batch, rows = generation.batch, part.local
    if part.whole:
        return (generation.advantages[rows], batch.measured[rows], generation.correct[rows], old.nthr_selected[rows],
                slice(0, rows.stop - rows.start))
    size = generation.group_size
    width = max([batch.mask.shape[1]] + [length for length, _ in remote.values()])
    mask = torch.zeros((size, width), dtype=torch.bool)
    selected = torch.zeros_like(mask)
    advantages = torch.zeros(size, dtype=generation.advantages.dtype)
    for index, (length, count) in remote.items():
        mask[index, :length] = True
        selected[index, :count] = True
    local = slice(part.first_index, part.first_index + rows.stop - rows.start)
    mask[local, : batch.mask.shape[1]] = batch.measured[rows]
    selected[local, : batch.mask.shape[1]] = old.nthr_selected[rows]
    advantages[local] = generation.advantages[rows]
    return advantages, mask, generation.group_correct[part.group], selected, local
