"""Group-relative advantages and the per-token advantages of the methods (GRPO, Pos Only, Random, NTHR)."""

from __future__ import annotations

import math

import torch

from ._checks import check_shape, check_tensor, on_device

STD_CONVENTIONS = ("sample", "population", "none")
ETA_POLICIES = ("paper", "zero", "p", "1-p")


def group_advantages(rewards: torch.Tensor, group_size: int, *, std: str = "sample",
                     eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages A_i = (r_i - mean(r)) / (std(r) + eps) within consecutive groups of group_size.

    rewards: [B] with B a multiple of group_size (responses of one question are consecutive).
    std: "sample" (Bessel-corrected, TRL's and verl's convention), "population" (the paper's theory:
    A = p+ for correct and -p- for incorrect when eps = 0) or "none" (mean-centred only).
    A group whose rewards are all equal gets advantage 0.
    """
    check_tensor("rewards", rewards, ndim=1, dtype="float", finite=True)
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if rewards.numel() == 0 or rewards.numel() % group_size:
        raise ValueError(f"rewards has {rewards.numel()} entries, not a positive multiple of "
                         f"group_size={group_size}")
    if std not in STD_CONVENTIONS:
        raise ValueError(f"std must be one of {STD_CONVENTIONS}, got {std!r}")
    if std == "sample" and group_size < 2:
        raise ValueError("group_size must be at least 2 for std='sample'")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    grouped = rewards.reshape(-1, group_size)
    # PAPER (GRPO): A_i = (r_i - mean(r)) / std(r)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if std == "none":
        return centred.reshape(-1)
    spread = grouped.std(dim=1, unbiased=(std == "sample"), keepdim=True)
    advantages = centred / (spread + eps)
    advantages = torch.where(spread == 0, torch.zeros_like(advantages), advantages)
    return advantages.reshape(-1)


def pos_only(advantages: torch.Tensor) -> torch.Tensor:
    """Pos Only control: negative advantages set to 0 (no negative gradient)."""
    return advantages.clamp(min=0)


def eta_for_group(policy, success_rate: float) -> float:
    """NTHR's down-weighting factor eta for a group with success rate p = N+/G.

    policy: "paper" = 2|0.5 - p| (the paper's training default), "zero" = 0 (per-question
    experiment), "p", "1-p" (ablations), or a number in [0, 1] used as is.
    """
    p = float(success_rate)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"success_rate must be in [0, 1], got {p}")
    if isinstance(policy, (int, float)) and not isinstance(policy, bool):
        if not 0.0 <= float(policy) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {policy}")
        return float(policy)
    if policy == "paper":
        return 2.0 * abs(0.5 - p)  # PAPER (NTHR training): eta = 2|0.5 - p|
    if policy == "zero":
        return 0.0
    if policy == "p":
        return p
    if policy == "1-p":
        return 1.0 - p
    raise ValueError(f"eta must be a number in [0, 1] or one of {ETA_POLICIES}, got {policy!r}")


def parse_eta(text: str):
    """Parse an eta policy from the command line: a policy name or a number."""
    try:
        return float(text)
    except ValueError:
        if text not in ETA_POLICIES:
            raise ValueError(f"eta must be a number in [0, 1] or one of {ETA_POLICIES}, got {text!r}")
        return text


def token_advantages(advantages: torch.Tensor, mask: torch.Tensor, selected: torch.Tensor | None = None,
                     eta: float = 1.0) -> torch.Tensor:
    """Per-token advantages [G, T]: A_i on response tokens, times eta on selected tokens, 0 off mask.

    PAPER (NTHR): the advantage of a selected token is multiplied by eta; all else is unchanged.
    """
    check_tensor("advantages", advantages, ndim=1, dtype="float")
    check_tensor("mask", mask, ndim=2, dtype="bool")
    if mask.shape[0] != advantages.shape[0]:
        raise ValueError(f"mask must have {advantages.shape[0]} rows (one per advantage), got {mask.shape[0]}")
    mask, selected = on_device(advantages.device, mask, selected)
    per_token = advantages[:, None].expand(mask.shape).clone()
    if selected is not None:
        check_tensor("selected", selected, dtype="bool")
        check_shape("selected", selected, tuple(mask.shape))
        if bool((selected & ~mask).any()):
            raise ValueError("selected marks tokens outside mask")
        per_token = torch.where(selected, per_token * eta, per_token)
    return per_token.masked_fill(~mask, 0.0)


def random_matched_selection(selected: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor, *,
                             seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """GRPO + Random control: in each incorrect response, as many uniformly random response tokens
    as `selected` marks in that response (PAPER Sec. 5.3). Correct responses get nothing."""
    check_tensor("selected", selected, ndim=2, dtype="bool")
    check_tensor("mask", mask, ndim=2, dtype="bool")
    check_shape("mask", mask, tuple(selected.shape))
    check_tensor("correct", correct, ndim=1, dtype="bool")
    check_shape("correct", correct, (selected.shape[0],))
    if generator is None:       # a CPU generator: the same draws whichever device the group is on
        generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    mask, correct = on_device(selected.device, mask, correct)
    chosen = torch.zeros_like(selected)
    for row in range(selected.shape[0]):
        count = int((selected[row] & mask[row]).sum())
        if correct[row] or count == 0:
            continue
        positions = mask[row].nonzero().squeeze(1)
        order = torch.randperm(positions.numel(), generator=generator).to(positions.device)
        chosen[row, positions[order[:count]]] = True
    return chosen


def success_rate(correct: torch.Tensor) -> float:
    """p = N+/G for one group."""
    return float(correct.float().mean()) if correct.numel() else math.nan
