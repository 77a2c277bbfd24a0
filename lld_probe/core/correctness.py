"""Reward -> correct: the one rule every part of the toolkit uses (trainer, protocol, log readers).

Three rules, each named by the string the run store's meta.json records (`correctness_rule`):
- "reward >= threshold": a threshold is given (correct_threshold);
- "binary reward": every reward of the batch is 0 or 1; correct means reward == 1;
- "advantage sign (non-binary rewards)": correct means the reward is above its group's mean, i.e. the GRPO
  advantage (reward - group mean, divided by a positive scale) is positive: the side the update pushes up
  (PAPER: A_i = (r_i - mean(r)) / std(r)). A reward equal to its group's mean (advantage 0, e.g. every
  response of a group rewarded alike) is not correct: such a group has no correct response and is not mixed.
On binary rewards the advantage sign gives the same split except in an all-correct group (no positive side),
which the binary rule keeps all correct: binary rewards always take the binary rule.
"""

from __future__ import annotations

import torch

THRESHOLD_RULE = "reward >= threshold"
BINARY_RULE = "binary reward"
ADVANTAGE_SIGN_RULE = "advantage sign (non-binary rewards)"
# what a run records when no threshold is given: each batch takes the binary rule when its rewards are all 0/1
DEFAULT_RULE = f"{BINARY_RULE}, else {ADVANTAGE_SIGN_RULE}"


def rewards_are_binary(rewards: torch.Tensor) -> bool:
    """Whether every reward is exactly 0 or 1."""
    return bool(((rewards == 0) | (rewards == 1)).all())


def configured_rule(threshold: float | None) -> str:
    """The rule a run records in meta.json: the threshold's, else the default (binary, else advantage sign)."""
    return THRESHOLD_RULE if threshold is not None else DEFAULT_RULE


def batch_rule(rewards: torch.Tensor, threshold: float | None = None) -> str:
    """The rule that decides one batch: the threshold when given, else binary when every reward is 0/1, else
    the advantage sign."""
    if threshold is not None:
        return THRESHOLD_RULE
    return BINARY_RULE if rewards_are_binary(torch.as_tensor(rewards)) else ADVANTAGE_SIGN_RULE


def above_group_mean(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """reward > the mean reward of its group (groups: one integer label per reward), in float64 so that a
    group rewarded alike has no response above its mean. The sign of the GRPO advantage (PAPER: A_i)."""
    rewards = torch.as_tensor(rewards, dtype=torch.float64)
    groups = torch.as_tensor(groups, dtype=torch.long)
    if groups.shape != rewards.shape:
        raise ValueError(f"groups has shape {tuple(groups.shape)}, rewards {tuple(rewards.shape)}")
    labels, index = torch.unique(groups, return_inverse=True)
    sums = torch.zeros(len(labels), dtype=torch.float64).index_add_(0, index, rewards)
    counts = torch.zeros(len(labels), dtype=torch.float64).index_add_(0, index, torch.ones_like(rewards))
    return rewards > (sums / counts)[index]


def correct_from_rewards(rewards: torch.Tensor, threshold: float | None = None, *,
                         groups: torch.Tensor | None = None) -> torch.Tensor:
    """One batch's rewards -> correct, by `batch_rule`: reward >= threshold; binary rewards -> reward == 1;
    non-binary rewards -> above their group's mean (groups: a group label per reward). Non-binary rewards
    without a threshold or groups, and NaN rewards, raise ValueError naming the problem."""
    rewards = torch.as_tensor(rewards)
    if torch.isnan(rewards).any():
        raise ValueError("a reward is NaN (every reward function returned None for a completion): "
                         "correctness is undefined")
    rule = batch_rule(rewards, threshold)
    if rule == THRESHOLD_RULE:
        return rewards >= threshold
    if rule == BINARY_RULE:
        return rewards == 1
    if groups is None:
        values = sorted(set(rewards.tolist()))[:6]
        raise ValueError(f"rewards must be binary (0 or 1) to tell correct from incorrect responses without their "
                         f"groups, got values {values}: say what is correct with correct_threshold=X (a reward >= X "
                         f"is correct) and/or correct_reward=NAME (the reward function or column that decides)")
    return above_group_mean(rewards, groups)
