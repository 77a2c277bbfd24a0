"""The methods compared by the paper, four ways of weighting a group's advantages: grpo, pos_only, random
(matched count), nthr. The one owner of what each method does to a group's advantages."""

from __future__ import annotations

import torch

from .advantages import eta_for_group, pos_only, random_matched_selection, success_rate, token_advantages

METHODS = ("grpo", "pos_only", "random", "nthr")
SEQUENCE_LEVEL = ("grpo", "pos_only")     # one advantage per response; the others weight tokens


def check_methods(methods) -> list[str]:
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods (--methods) must be a non-empty subset of {METHODS}, got {methods}")
    return methods


def sequence_advantages(method: str, advantages: torch.Tensor) -> torch.Tensor:
    """The per-response advantages [B] of a sequence-level method: grpo unchanged, pos_only with
    negative advantages set to 0 (PAPER: Pos Only drops the negative gradient)."""
    if method == "grpo":
        return advantages
    if method == "pos_only":
        return pos_only(advantages)
    raise ValueError(f"{method!r} weights tokens, not responses: use method_token_advantages")


def method_token_advantages(method: str, advantages: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor,
                             nthr_selected: torch.Tensor, eta, *, seed: int = 0):
    """(per-token advantages [G, T], the tokens whose advantage was scaled by eta [G, T]) of one group.

    grpo: A on every token. pos_only: negative A set to 0. nthr: A * eta on NTHR's selection.
    random: A * eta on as many random tokens per incorrect response as NTHR selected there.
    eta is a policy name or number (lld_probe.core.eta_for_group) evaluated at the group's p.
    """
    nothing = torch.zeros_like(mask, device=advantages.device)
    if method in SEQUENCE_LEVEL:
        return token_advantages(sequence_advantages(method, advantages), mask), nothing
    eta_value = eta_for_group(eta, success_rate(correct))
    if method == "nthr":
        selected = nthr_selected
    elif method == "random":
        selected = random_matched_selection(nthr_selected, mask, correct, seed=seed)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return token_advantages(advantages, mask, selected, eta_value), selected.to(advantages.device)
