"""Reward -> correct (lld_probe.core.correctness): binary, threshold, and the advantage sign for non-binary
rewards, checked against an independent float64 recomputation of TRL's GRPO advantage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lld_probe.core import (ADVANTAGE_SIGN_RULE, BINARY_RULE, DEFAULT_RULE, THRESHOLD_RULE, batch_rule,
                            configured_rule, correct_from_rewards)
from lld_probe.integrations.trl.advantage_sign import check_advantage_sign_applies


def _trl_advantages(rewards: np.ndarray, group_size: int, scale_rewards: str) -> np.ndarray:
    """TRL 1.16's sum_then_normalize advantage, written out in float64: group-mean baseline, then divided by
    the group's or the batch's sample std + 1e-4, or not divided."""
    grouped = rewards.reshape(-1, group_size)
    centred = (grouped - grouped.mean(1, keepdims=True)).reshape(-1)
    if scale_rewards == "group":
        return centred / (np.repeat(grouped.std(1, ddof=1), group_size) + 1e-4)
    if scale_rewards == "batch":
        return centred / (rewards.std(ddof=1) + 1e-4)
    return centred


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_non_binary_correct_is_a_positive_trl_advantage(scale_rewards):
    rng = np.random.default_rng(0)
    rewards = rng.random(48).round(2)            # ties inside groups included
    rewards[8:16] = 0.25                          # a group rewarded alike: advantage 0, nobody correct
    groups = torch.arange(48) // 8
    correct = correct_from_rewards(torch.tensor(rewards, dtype=torch.float32), groups=groups)
    advantages = _trl_advantages(rewards.astype(np.float32).astype(np.float64), 8, scale_rewards)
    assert correct.tolist() == (advantages > 1e-12).tolist()
    assert not correct[8:16].any() and 0 < int(correct.sum()) < 48
    assert batch_rule(torch.tensor(rewards)) == ADVANTAGE_SIGN_RULE


def test_binary_rewards_keep_reward_one_and_agree_with_the_sign_except_all_correct_groups():
    rewards = torch.tensor([1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.float32)
    groups = torch.arange(12) // 4
    correct = correct_from_rewards(rewards, groups=groups)
    assert correct.tolist() == (rewards == 1).tolist() and batch_rule(rewards) == BINARY_RULE
    by_sign = torch.from_numpy(_trl_advantages(rewards.double().numpy(), 4, "group") > 0)
    assert torch.equal(correct[:4], by_sign[:4]) and torch.equal(correct[8:], by_sign[8:])
    assert correct[4:8].all() and not by_sign[4:8].any()      # all-correct group: the binary rule keeps it


def test_an_explicit_threshold_wins_and_non_binary_rewards_without_groups_are_refused():
    rewards = torch.tensor([0.2, 0.9, 0.5, 0.0])
    assert correct_from_rewards(rewards, 0.5, groups=torch.zeros(4)).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="binary"):
        correct_from_rewards(rewards)
    assert configured_rule(0.5) == THRESHOLD_RULE and configured_rule(None) == DEFAULT_RULE


def test_normalize_then_sum_with_several_reward_functions_is_refused_for_the_advantage_sign():
    non_binary = torch.tensor([0.0, 1.2, 0.2, 1.0])
    with pytest.raises(ValueError, match="normalize_then_sum.*correct_reward"):
        check_advantage_sign_applies(non_binary, threshold=None, aggregation="normalize_then_sum", reward_count=2)
    check_advantage_sign_applies(non_binary, threshold=0.5, aggregation="normalize_then_sum", reward_count=2)
    check_advantage_sign_applies(non_binary, threshold=None, aggregation="normalize_then_sum", reward_count=1)
    check_advantage_sign_applies(non_binary, threshold=None, aggregation="sum_then_normalize", reward_count=2)
    check_advantage_sign_applies(torch.tensor([0.0, 1.0]), threshold=None, aggregation="normalize_then_sum",
                                 reward_count=2)
