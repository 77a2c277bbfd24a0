"""Reward -> correct: the one rule every part of the toolkit uses (trainer, protocol, log readers)."""

from __future__ import annotations

import torch


def rewards_are_binary(rewards: torch.Tensor) -> bool:
    """Whether every reward is exactly 0 or 1."""
    return bool(((rewards == 0) | (rewards == 1)).all())


def correct_from_rewards(rewards: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """Binary rewards -> reward == 1; with a threshold, reward >= threshold. Non-binary rewards without a
    threshold and NaN rewards raise ValueError naming the problem."""
    rewards = torch.as_tensor(rewards)
    if torch.isnan(rewards).any():
        raise ValueError("a reward is NaN (every reward function returned None for a completion): "
                         "correctness is undefined")
    if threshold is None:
        if not rewards_are_binary(rewards):
            values = sorted(set(rewards.tolist()))[:6]
            raise ValueError(f"rewards must be binary (0 or 1) to tell correct from incorrect responses, got "
                             f"values {values}: say what is correct with correct_threshold=X (a reward >= X is correct) "
                             f"and/or correct_reward=NAME (the reward function or column that decides)")
        return rewards == 1
    return rewards >= threshold
