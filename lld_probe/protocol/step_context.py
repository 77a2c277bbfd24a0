"""A group inside a training step: Delta of its correct responses under its own share of a step's gradient
alone, and under the whole step (its own and the other groups' gradients together).

A training step's loss is the token mean over every group of the step, so its gradient is
sum_i (n_i / N) g_i, with g_i group i's token-mean gradient (the protocol's gradient of that group alone),
n_i its response tokens and N theirs over the step. The LLD rate a training run records is measured
after the whole step; this says how much of it the group's own gradient makes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import is_lazy, sequence_logprob
from ..scoring import score_group
from .question import apply_update


@dataclass
class KeptGroup:
    """What a step needs of one kept group: its layout, correctness, likelihoods before, and every
    method's gradient (a list per parameter; None where no row contributes)."""
    question_id: str
    batch: object
    correct: torch.Tensor
    logp_before: torch.Tensor
    gradients: dict

    @property
    def tokens(self) -> int:
        return int(self.batch.mask.sum())


def _weighted_sum(gradient_lists, weights):
    """sum_i w_i g_i per parameter; None where every g_i is None, None overall when every list is None."""
    lists = [(g, w) for g, w in zip(gradient_lists, weights) if g is not None]
    if not lists:
        return None
    total = []
    for parts in zip(*(g for g, _ in lists)):
        present = [(p, w) for p, (_, w) in zip(parts, lists) if p is not None]
        total.append(sum(w * p for p, w in present) if present else None)
    return total


def _deltas(model, group: KeptGroup, temperature: float) -> torch.Tensor:
    """Delta (sequence sums, float64) of the group's correct responses at the model's current parameters."""
    after = sequence_logprob(score_group(model, group.batch, temperature=temperature).token_logps.cpu(),
                             group.batch.mask)
    return (after.double() - group.logp_before.double())[group.correct]


def step_context_rows(model, copies, base_state, groups: list[KeptGroup], step_index: int, config, warm=None) -> list:
    """Per method and group: Delta(x) and the lazy correct responses under its own share alone and under the
    whole step of `groups`; the model is left at the base parameters."""
    total = sum(group.tokens for group in groups)
    shares = [group.tokens / total for group in groups]
    rows = []
    for method in config.methods:
        step = _weighted_sum([group.gradients[method] for group in groups], shares)
        apply_update(model, copies, base_state, step, config, warm)
        in_step = [_deltas(model, group, config.temperature) for group in groups]
        for group, share, whole in zip(groups, shares, in_step):
            apply_update(model, copies, base_state, _weighted_sum([group.gradients[method]], [share]), config, warm)
            own = _deltas(model, group, config.temperature)
            rows.append({"question_id": group.question_id, "method": method, "step_index": step_index,
                         "step_groups": len(groups), "token_share": share, "n_correct": int(group.correct.sum()),
                         # PAPER: Delta(x) = mean over correct y+ of the log-likelihood change
                         "delta_own_sum": float(own.mean()), "delta_step_sum": float(whole.mean()),
                         "lazy_own": int(is_lazy(own).sum()), "lazy_step": int(is_lazy(whole).sum())})
    model.load_state_dict(base_state)
    copies.sync()
    return rows
