"""When correctness falls to the advantage sign (non-binary rewards, no correct_threshold), the probes read it
from the deciding reward against its group's mean (lld_probe.core.correctness). That is the sign of TRL's
advantage for every scale_rewards ("group", "batch", "none": the group-mean baseline divided by a positive
scale) and every loss_type (each multiplies the advantage by a non-negative weight) under TRL's default
multi_objective_aggregation="sum_then_normalize". Under "normalize_then_sum" with several reward functions,
TRL normalises each function within its group and centres the weighted sum on the batch mean: the sign is no
longer that of the weighted reward against its group's mean, so that case is refused with its remedy."""

from __future__ import annotations

import torch

from ...core import ADVANTAGE_SIGN_RULE, batch_rule


def check_advantage_sign_applies(weighted_rewards: torch.Tensor, *, threshold: float | None, aggregation: str,
                                 reward_count: int) -> None:
    """ValueError when TRL's weighted reward (deciding correctness: no correct_reward) would split the batch by
    the advantage sign but TRL's advantage does not follow its group-mean baseline."""
    if reward_count < 2 or aggregation == "sum_then_normalize":
        return
    if batch_rule(weighted_rewards, threshold) == ADVANTAGE_SIGN_RULE:
        raise ValueError(f"multi_objective_aggregation={aggregation!r} with {reward_count} reward functions: TRL's "
                         f"advantage sign is not the weighted reward against its group's mean, which decides "
                         f"correctness for non-binary rewards; say what is correct with correct_reward=NAME "
                         f"and/or correct_threshold=X")
