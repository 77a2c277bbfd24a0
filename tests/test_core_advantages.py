import math

import pytest
import torch

from lld_probe.core import (eta_for_group, group_advantages, parse_eta, pos_only, preference_weights,
                            random_matched_selection, token_advantages)


def brute_advantages(rewards, group_size, std, eps):
    out = []
    for start in range(0, len(rewards), group_size):
        group = [float(r) for r in rewards[start:start + group_size]]
        mean = sum(group) / len(group)
        if std == "none":
            out += [r - mean for r in group]
            continue
        dof = len(group) - 1 if std == "sample" else len(group)
        spread = math.sqrt(sum((r - mean) ** 2 for r in group) / dof)
        out += [0.0 if spread == 0 else (r - mean) / (spread + eps) for r in group]
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("std", ["sample", "population", "none"])
def test_group_advantages_match_brute_force(std):
    rewards = torch.tensor([1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(group_advantages(rewards, 4, std=std, eps=1e-4),
                               brute_advantages(rewards, 4, std, 1e-4))


def test_population_std_gives_paper_preference_weights():
    correct = torch.tensor([True, True, False, False, False, False, False, False])
    advantages = group_advantages(correct.double(), 8, std="population", eps=0.0)
    p_plus, p_minus = preference_weights(correct)
    assert advantages[0].item() == pytest.approx(p_plus)
    assert advantages[-1].item() == pytest.approx(-p_minus)


def test_constant_group_gets_zero_advantage():
    assert group_advantages(torch.ones(4), 4).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(rewards=torch.ones(5), group_size=4), "group_size"),
    (dict(rewards=torch.ones(4), group_size=4, std="bessel"), "std"),
    (dict(rewards=torch.tensor([1.0, math.nan]), group_size=2), "rewards"),
    (dict(rewards=torch.ones(2), group_size=1), "group_size"),
])
def test_group_advantages_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(**kwargs)


def test_pos_only_and_token_advantages():
    advantages = torch.tensor([1.5, -0.5, -0.5])
    assert pos_only(advantages).tolist() == [1.5, 0.0, 0.0]
    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    selected = torch.tensor([[False, False, False], [False, True, True], [False, False, False]])
    per_token = token_advantages(advantages, mask, selected, eta=0.2)
    expected = torch.tensor([[1.5, 1.5, 0.0], [-0.5, -0.1, -0.1], [-0.5, 0.0, 0.0]])
    torch.testing.assert_close(per_token, expected)
    with pytest.raises(ValueError, match="selected"):
        token_advantages(advantages, mask, ~mask)


def test_eta_policies():
    assert eta_for_group("paper", 0.25) == pytest.approx(0.5)
    assert eta_for_group("zero", 0.25) == 0.0
    assert eta_for_group("p", 0.25) == 0.25
    assert eta_for_group("1-p", 0.25) == 0.75
    assert eta_for_group(0.3, 0.9) == 0.3
    assert parse_eta("0.5") == 0.5 and parse_eta("paper") == "paper"
    for bad in ("half", 1.5):
        with pytest.raises(ValueError, match="eta"):
            eta_for_group(bad, 0.5)


def test_random_matched_selection_counts_and_seed():
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[3, 6:] = False
    correct = torch.tensor([True, False, False, False])
    selected = torch.zeros(4, 10, dtype=torch.bool)
    selected[1, :3] = True
    selected[3, 2:6] = True
    chosen = random_matched_selection(selected, mask, correct, seed=5)
    assert chosen.sum(1).tolist() == [0, 3, 0, 4]
    assert not (chosen & ~mask).any()
    assert torch.equal(chosen, random_matched_selection(selected, mask, correct, seed=5))
    assert not torch.equal(chosen, random_matched_selection(selected, mask, correct, seed=6))
