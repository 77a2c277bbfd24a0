"""Advantage variants compared by the paper: grpo, pos_only, random (matched count), nthr.
The one owner of what each variant does to a group's advantages."""

from __future__ import annotations

import torch

from .advantages import eta_for_group, pos_only, random_matched_selection, success_rate, token_advantages

VARIANTS = ("grpo", "pos_only", "random", "nthr")
SEQUENCE_LEVEL = ("grpo", "pos_only")     # one advantage per response; the others weight tokens


def check_variants(variants) -> list[str]:
    variants = list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {variants}")
    return variants


def sequence_advantages(variant: str, advantages: torch.Tensor) -> torch.Tensor:
    """The per-response advantages [B] of a sequence-level variant: grpo unchanged, pos_only with
    negative advantages set to 0 (PAPER: Pos Only drops the negative gradient)."""
    if variant == "grpo":
        return advantages
    if variant == "pos_only":
        return pos_only(advantages)
    raise ValueError(f"{variant!r} weights tokens, not responses: use variant_token_advantages")


def variant_token_advantages(variant: str, advantages: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor,
                             nthr_selected: torch.Tensor, eta, *, seed: int = 0):
    """(per-token advantages [G, T], the tokens whose advantage was scaled by eta [G, T]) of one group.

    grpo: A on every token. pos_only: negative A set to 0. nthr: A * eta on NTHR's selection.
    random: A * eta on as many random tokens per incorrect response as NTHR selected there.
    eta is a policy name or number (lld_probe.core.eta_for_group) evaluated at the group's p.
    """
    nothing = torch.zeros_like(mask, device=advantages.device)
    if variant in SEQUENCE_LEVEL:
        return token_advantages(sequence_advantages(variant, advantages), mask), nothing
    eta_value = eta_for_group(eta, success_rate(correct))
    if variant == "nthr":
        selected = nthr_selected
    elif variant == "random":
        selected = random_matched_selection(nthr_selected, mask, correct, seed=seed)
    else:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return token_advantages(advantages, mask, selected, eta_value), selected.to(advantages.device)
