"""The verl integration's settings and layout helpers (plain torch: they run without verl)."""

import math

import pytest
import torch

from lld_probe.integrations.verl.layout import response_values, sequence_advantages, to_response_width, token_lists
from lld_probe.integrations.verl.settings import check_verl_config, probe_settings_from_config


def test_lld_block_to_probe_settings():
    settings, store = probe_settings_from_config({"method": "nthr", "nthr_beta": 0.5, "store_dir": "/x"}, seed=7)
    assert (settings.method, settings.nthr_beta, settings.seed, settings.probe_set_size, store) == ("nthr", 0.5, 7, 0, "/x")
    assert probe_settings_from_config(None)[0].method == "grpo"
    assert probe_settings_from_config({"nthr_beta": -math.inf})[0].nthr_beta == -math.inf


@pytest.mark.parametrize("block, message", [
    ({"methd": "nthr"}, "lld.methd"), ({"probe_set_size": 4}, "probe set"), ({"method": "ppo"}, "method must be"),
    ({"nthr_beta": math.nan}, "nthr_beta"),
])
def test_lld_block_refusals(block, message):
    with pytest.raises(ValueError, match=message):
        probe_settings_from_config(block)


@pytest.mark.parametrize("config, message", [
    ({"trainer": {"use_v1": True}}, "trainer.use_v1"),
    ({"actor_rollout_ref": {"actor": {"fsdp_config": {"ulysses_sequence_parallel_size": 2}}}}, "ulysses"),
    ({"actor_rollout_ref": {"actor": {"strategy": "megatron"}}}, "strategy=megatron"),
    ({"actor_rollout_ref": {"rollout": {"multi_turn": {"enable": True}}}}, "multi_turn"),
    ({"algorithm": {"adv_estimator": "gae"}}, "^algorithm.adv_estimator=gae: [^\n]*$"),
    ({"algorithm": {"adv_estimator": "optimal_token_baseline"}}, "adv_estimator=optimal_token_baseline"),
    ({"algorithm": {"adv_estimator": "remax", "use_kl_in_reward": True}}, "algorithm.use_kl_in_reward=true"),
    ({"algorithm": {"adv_estimator": "reinforce_plus_plus", "gamma": 0.99}}, "algorithm.gamma=0.99"),
    ({"actor_rollout_ref": {"rollout": {"n": 1}}}, "^actor_rollout_ref.rollout.n=1: [^\n]*$"),
])
def test_verl_settings_refused(config, message):
    with pytest.raises(ValueError, match=message):
        check_verl_config(config)
    check_verl_config({"trainer": {"use_v1": False, "balance_batch": True}})
    check_verl_config({"algorithm": {"adv_estimator": "grpo", "use_kl_in_reward": True, "gamma": 0.9},
                       "actor_rollout_ref": {"rollout": {"n": 2}}})
    check_verl_config({"algorithm": {"adv_estimator": "reinforce_plus_plus", "gamma": 1.0}})


def test_token_alignment_from_verl_layout():
    """Left-padded prompts, right-padded responses; packed outputs: completion token t of a row with a P-token
    prompt is read at packed position offset + P + t - 1 (the state at t-1 predicts token t)."""
    prompts = torch.tensor([[0, 5, 6], [7, 8, 9]])
    responses = torch.tensor([[10, 11, 0], [12, 0, 0]])
    attention = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    prompt_ids, completion_ids = token_lists(prompts, responses, attention, attention[:, 3:])
    assert (prompt_ids, completion_ids) == ([[5, 6], [7, 8, 9]], [[10, 11], [12]])
    sequences = [p + c for p, c in zip(prompt_ids, completion_ids)]
    values = torch.tensor([float(token) for sequence in sequences for token in sequence])   # each position's own token
    offsets = torch.tensor([0, 4, 8])
    view = response_values(values, offsets, [2, 3], [2, 1], 2)
    # the value read for completion token t is the token just before it (the position that predicts it)
    assert view.tolist() == [[6.0, 10.0], [9.0, 0.0]]
    with pytest.raises(ValueError, match="multi-turn"):
        token_lists(prompts, responses, attention, torch.tensor([[1, 0, 0], [1, 0, 0]]))


def test_advantage_layouts():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert sequence_advantages(torch.tensor([[0.5, 0.5, 0.0], [-1.0, 0.0, 0.0]]), mask).tolist() == [0.5, -1.0]
    with pytest.raises(ValueError, match="adv_estimator"):
        sequence_advantages(torch.tensor([[0.5, 0.4, 0.0], [-1.0, 0.0, 0.0]]), mask)
    assert to_response_width(torch.tensor([2.0, 3.0]), mask).tolist() == [[2.0, 2.0, 0.0], [3.0, 0.0, 0.0]]
    assert to_response_width(torch.tensor([[1.0, 2.0], [4.0, 9.0]]), mask).tolist() == [[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]]


def test_lld_probes_false_selects_the_token_dump_alone():
    from lld_probe.integrations.verl.settings import check_dump_config, probes_enabled
    assert probes_enabled(None) and probes_enabled({"method": "nthr"}) and not probes_enabled({"probes": False})
    assert probe_settings_from_config({"probes": False})[0].method == "grpo"       # an accepted key
    with pytest.raises(ValueError, match="lld.probes"):
        probes_enabled({"probes": "no"})
    check_dump_config({"actor_rollout_ref": {"actor": {"strategy": "megatron"}}})   # the dump needs no FSDP
    with pytest.raises(ValueError, match="trainer.use_v1"):
        check_dump_config({"trainer": {"use_v1": True}})
    with pytest.raises(ValueError, match="multi_turn"):
        check_dump_config({"actor_rollout_ref": {"rollout": {"multi_turn": {"enable": True}}}})


def test_optimizer_steps_per_verl_batch():
    """verl's train_mini_batch: one optimizer step per mini-batch of ppo_mini_batch_size x rollout.n responses,
    ppo_epochs times over."""
    from lld_probe.integrations.verl.optimizer_steps import optimizer_steps_per_batch
    assert optimizer_steps_per_batch(64, mini_batch_prompts=8, group_size=8, epochs=1) == 1
    assert optimizer_steps_per_batch(64, mini_batch_prompts=2, group_size=8, epochs=1) == 4
    assert optimizer_steps_per_batch(64, mini_batch_prompts=2, group_size=8, epochs=3) == 12
    with pytest.raises(ValueError, match="^a batch of 60 responses .*ppo_mini_batch_size=2"):
        optimizer_steps_per_batch(60, mini_batch_prompts=2, group_size=8, epochs=1)
