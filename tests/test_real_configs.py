"""Configurations people train with: truncated completions masked out of the loss, several weighted
reward functions, partial credit, held-out JSONL splits, CLI values honoured or refused before a model
loads, and errors that name the problem."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from lld_probe.analysis import load, lld_rate_by_step
from lld_probe.core import lld_rate
from lld_probe.integrations.trl.run import TrainSettings, make_trainer, run_training
from helpers import train_settings


def _settings(tmp_path, name, **kwargs):
    values = dict(out=str(tmp_path / name), method="nthr", steps=2, prompts_per_step=4, group_size=8,
                  eval_every=0, probe_set_size=4, probe_every=1, progress=False)
    values.update(kwargs)
    return train_settings(**values)


@pytest.mark.integration
def test_truncated_completions_are_recorded_and_left_out_of_every_rate(tmp_path):
    # 12 characters cut most of the tiny model's answers ("The answer is 7" is 15): TRL masks them out
    trainer = run_training(_settings(tmp_path, "cut", max_completion_length=12,
                                     extra={"mask_truncated_completions": True}))
    run = load(tmp_path / "cut")
    responses = run.responses
    cut = responses[responses["truncated"]]
    assert 0 < len(cut) < len(responses)
    assert cut["logp_before"].isna().all() and cut["logp_after"].isna().all()
    assert (cut["completion"].str.len() > 0).all()           # the text is kept, the likelihoods are not
    assert not run.tokens.merge(cut[["step", "group_id", "response_index"]]).shape[0]   # no token rows
    for step, frame in responses.groupby("step"):
        measured = frame[frame["correct"] & frame["logp_before"].notna()]
        stored = run.scalar("lld/rate").set_index("step")["value"].get(step, math.nan)
        assert stored == pytest.approx(lld_rate(measured["logp_after"] - measured["logp_before"]), nan_ok=True)
        assert run.scalar("lld/left_out").set_index("step")["value"][step] == int(frame["truncated"].sum())
        assert run.scalar("lld/mean_length").set_index("step")["value"][step] == \
            pytest.approx(frame.loc[~frame["truncated"], "n_tokens"].mean())
    by_step = lld_rate_by_step(responses)
    assert by_step["n_left_out"].sum() == int((cut["correct"]).sum())
    assert trainer.state.global_step == 2


def _two_reward_run(out):
    """A plain TRL GRPOTrainer with an accuracy and a format reward, weights [1, 0.2], log_completions."""
    from trl import GRPOConfig, GRPOTrainer

    from lld_probe.integrations.trl.run import build_dataset, reward_function
    from lld_probe.models import load_model
    from lld_probe.tasks import get_task
    model, tokenizer = load_model("tiny")
    task = get_task("arithmetic")
    accuracy = reward_function(task)
    accuracy.__name__ = "accuracy"

    def format_reward(completions, **kwargs):
        return [1.0 if "answer" in c else 0.0 for c in completions]

    config = GRPOConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=16, num_generations=8,
                        max_completion_length=16, learning_rate=1e-4, use_cpu=True, bf16=False, logging_steps=1,
                        report_to=[], log_completions=True, save_strategy="steps", save_steps=2, disable_tqdm=True,
                        seed=0, reward_weights=[1.0, 0.2])
    GRPOTrainer(model=model, args=config, reward_funcs=[accuracy, format_reward],
                train_dataset=build_dataset(task, tokenizer, 16, 0), processing_class=tokenizer).train()


@pytest.mark.integration
def test_two_weighted_reward_functions_are_read_back_with_their_weights(tmp_path):
    _two_reward_run(tmp_path / "two")
    with pytest.warns(UserWarning, match="correct_reward=NAME"):
        run = load(tmp_path / "two")                     # 1.2 / 1.0 / 0.2 / 0: not binary, and it says how
    responses = run.responses
    assert run.meta["reward_weights"] == [1.0, 0.2]
    expected = responses["reward_accuracy"] + 0.2 * responses["reward_format_reward"]
    assert responses["reward"].to_numpy() == pytest.approx(expected.to_numpy())
    decided = load(tmp_path / "two", correct_reward="accuracy").responses
    assert decided["correct"].tolist() == (decided["reward_accuracy"] == 1.0).tolist()
    assert float(decided["correct"].mean()) == pytest.approx(float((responses["reward_accuracy"] == 1).mean()))
    with pytest.raises(ValueError, match="no reward column 'speed'.*'accuracy', 'format_reward'"):
        load(tmp_path / "two", correct_reward="speed")
    from lld_probe.analysis import write_report
    summary = write_report([tmp_path / "two"], tmp_path / "report", correct_reward="accuracy").read_text()
    assert "hold no likelihoods after each update" in summary


@pytest.mark.integration
def test_partial_credit_trains_by_advantage_sign_or_by_the_rule_given(tmp_path):
    def half_credit(completions, answer, **kwargs):
        return [1.0 if a in c else 0.5 for c, a in zip(completions, answer)]

    trainer, _ = make_trainer(_settings(tmp_path, "by_sign"))
    trainer.reward_funcs = [half_credit]
    trainer.reward_func_names = ["half_credit"]
    trainer.train()
    responses = load(tmp_path / "by_sign").responses
    above_mean = responses["reward"] > responses.groupby("group_id")["reward"].transform("mean")
    assert responses["correct"].tolist() == above_mean.tolist()
    trainer, _ = make_trainer(_settings(tmp_path, "ruled", correct_threshold=1.0))
    trainer.reward_funcs = [half_credit]
    trainer.reward_func_names = ["half_credit"]
    trainer.train()
    responses = load(tmp_path / "ruled").responses
    assert set(responses["reward"]) <= {0.5, 1.0}
    assert responses["correct"].tolist() == (responses["reward"] == 1.0).tolist()


def test_correct_reward_must_name_a_reward_function(tmp_path):
    trainer, _ = make_trainer(_settings(tmp_path, "named", correct_reward="accuracy"))
    with pytest.raises(ValueError, match="correct_reward 'accuracy' is not one of this trainer's reward functions"):
        trainer.train()


def test_jsonl_task_holds_questions_out(tmp_path):
    from lld_probe.tasks import get_task
    hashed = tmp_path / "q.jsonl"
    hashed.write_text("".join(json.dumps({"prompt": f"What is {i} + {i}?", "answer": 2 * i}) + "\n"
                              for i in range(40)))
    task = get_task(str(hashed))
    train, held = task.questions(100, split="train"), task.questions(100, split="eval")
    assert len(train) + len(held) == 40 and 0 < len(held) < 20
    assert not {q.prompt for q in train} & {q.prompt for q in held}
    assert "hash" in task.split_source
    explicit = tmp_path / "split.jsonl"
    explicit.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": i, "split": "eval" if i < 3 else "train"})
                                + "\n" for i in range(10)))
    task = get_task(str(explicit))
    assert [q.prompt for q in sorted(task.questions(10, split="eval"), key=lambda q: q.prompt)] == ["q0", "q1", "q2"]
    assert "split field" in task.split_source
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "answer": 1, "split": "test"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: split must be one of"):
        get_task(str(bad))


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], r"steps \(--steps\) must be at least 1, got 0"),
    (["--group-size", "1"], r"group_size \(--group-size\) must be at least 2, got 1"),
    (["--max-completion-length", "0"], r"max_completion_length \(--max-completion-length\) must be at least 1, got 0"),
    (["--lr", "nan"], r"learning_rate \(--learning-rate\) must be a finite number >= 0, got nan"),
    (["--lr=-1e-4"], r"learning_rate \(--learning-rate\) must be a finite number >= 0, got -0.0001"),
    (["--model", "Org/unknown-model"], r"learning_rate \(--learning-rate\) has no measured default for model 'Org/unknown-model'"),
    (["--trl", "no_such_field=1"], r"--trl no_such_field: not a field"),
    (["--model", "./missing-folder", "--lr", "1e-5", "--max-completion-length", "8"],
     r"model folder missing-folder does not exist"),
])
def test_cli_values_are_refused_before_a_model_loads(tmp_path, capsys, monkeypatch, argv, message):
    import re

    from lld_probe.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", str(tmp_path / "x"), *argv]) == 2
    error = capsys.readouterr().err
    assert re.search(message, error), error
    assert len(error.strip().splitlines()) == 1


def test_zero_is_a_value_not_unset(tmp_path):
    settings = _settings(tmp_path, "zero", learning_rate=0.0).resolved()
    assert settings.learning_rate == 0.0 and settings.max_completion_length == 24


def test_a_folder_without_a_model_is_named(tmp_path):
    from lld_probe.models import load_model
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is not a model folder: it has no config.json"):
        load_model(str(tmp_path / "empty"))


@pytest.mark.integration
def test_meta_records_model_task_world_size_and_the_steps_delta_spans(tmp_path):
    from lld_probe.integrations.trl import LLDConfig, LLDGRPOTrainer, build_dataset, reward_function
    from lld_probe.models import load_model
    from lld_probe.tasks import get_task
    model, tokenizer = load_model("tiny")
    task = get_task("arithmetic")
    config = LLDConfig(output_dir=str(tmp_path / "api"), method="grpo", num_generations=8,
                       per_device_train_batch_size=16, max_completion_length=16, max_steps=2, use_cpu=True, bf16=False,
                       report_to=[], disable_tqdm=True, save_strategy="no", steps_per_generation=2,
                       gradient_accumulation_steps=1, probe_set_size=0)
    LLDGRPOTrainer(model=model, args=config, reward_funcs=[reward_function(task)],
                   train_dataset=build_dataset(task, tokenizer, 32, seed=0), processing_class=tokenizer).train()
    meta = load(tmp_path / "api").meta
    assert meta["world_size"] == 1 and meta["delta_spans_optimizer_steps"] == 2
    assert meta["model"].endswith("tiny") and "32 rows" in meta["task"]
