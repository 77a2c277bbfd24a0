"""LLDGRPOTrainer with any reward: non-binary rewards and no correctness setting train as TRL's GRPOTrainer
does, and the probes split each group by the sign of its advantage (reward above the group's mean)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lld_probe.analysis.load import load
from lld_probe.analysis.report import lld_table
from lld_probe.core import DEFAULT_RULE
from lld_probe.integrations.trl.run import make_trainer
from lld_probe.models import load_model
from lld_probe.store.run_store import read_run_store
from test_trainer import _generation_batch, _settings


def length_score(completions, **kwargs):
    """A continuous reward: the completion's length in characters over 7 (never 0/1 only)."""
    return [len(c if isinstance(c, str) else c[-1]["content"]) / 7.0 for c in completions]


def _with_length_reward(trainer):
    trainer.reward_funcs = [length_score]
    trainer.reward_func_names = ["length_score"]
    return trainer


def _above_group_mean(responses):
    """Independent recomputation: reward > the mean of its group (numpy, float64)."""
    means = responses.groupby("group_id")["reward"].transform(lambda r: np.mean(r.to_numpy(dtype=np.float64)))
    return responses["reward"].to_numpy(dtype=np.float64) > means.to_numpy()


def test_nthr_trains_on_a_continuous_reward_and_splits_groups_by_advantage_sign(tmp_path):
    trainer, settings = make_trainer(_settings(tmp_path, "nthr", steps=2, probe_set_size=0))
    _with_length_reward(trainer).train()
    store = read_run_store(settings.out)
    responses = store.responses
    assert sorted(responses["step"].unique()) == [1, 2]
    assert not set(np.unique(responses["reward"])) <= {0.0, 1.0}
    expected = _above_group_mean(responses)
    assert responses["correct"].to_numpy(dtype=bool).tolist() == expected.tolist()
    assert 0 < expected.sum() < len(expected)
    # the side TRL's update pushes up: positive advantage exactly where correct (ties give 0)
    advantage = responses["advantage"].to_numpy()
    assert (advantage[expected] > 0).all() and (advantage[~expected] <= 1e-4).all()
    assert store.meta["correctness_rule"] == DEFAULT_RULE
    # analysis: the stored rule re-applied to the reward column gives the same split, and the report names it
    run = load(settings.out, correct_reward="reward")
    assert run.responses["correct"].astype(bool).tolist() == expected.tolist()
    table = lld_table([run])
    assert table.loc[0, "correct_by"] == DEFAULT_RULE


def test_grpo_on_a_non_binary_reward_equals_plain_grpo_trainer(tmp_path):
    model, tokenizer = load_model("tiny")
    ours, _ = make_trainer(_settings(tmp_path, "grpo"), model=model, tokenizer=tokenizer)
    plain, _ = make_trainer(_settings(tmp_path, "grpo", probes=False, out=str(tmp_path / "plain")),
                            model=model, tokenizer=tokenizer)
    _with_length_reward(ours), _with_length_reward(plain)
    raw, ours_inputs = _generation_batch(ours, seed=3)
    plain.model.train()
    torch.manual_seed(3)
    plain_inputs = plain._generate_and_score_completions(raw)
    assert torch.equal(ours_inputs["completion_ids"], plain_inputs["completion_ids"])
    assert torch.equal(ours_inputs["advantages"], plain_inputs["advantages"])
    assert ours.pending_probed.correct.any()
    ours.current_gradient_accumulation_steps = plain.current_gradient_accumulation_steps = 1   # set by train()
    gradients = []
    for trainer, inputs in ((ours, ours_inputs), (plain, plain_inputs)):
        model.zero_grad()
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
        gradients.append((float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert gradients[0][0] == gradients[1][0]
    assert all(torch.equal(a, b) for a, b in zip(gradients[0][1], gradients[1][1]))


def test_an_older_store_without_a_rule_keeps_the_binary_rule(tmp_path):
    trainer, settings = make_trainer(_settings(tmp_path, "grpo", steps=1, probe_set_size=0))
    _with_length_reward(trainer).train()
    meta_file = tmp_path / "grpo" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["correctness_rule"]
    meta_file.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="not binary"):
        run = load(tmp_path / "grpo", correct_reward="reward")
    assert run.responses["correct"].isna().all() and run.meta["correctness_rule"] == "binary reward"
