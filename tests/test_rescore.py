"""`lld-probe rescore` on the tiny model: a plain TRL GRPOTrainer run (checkpoints every step, completions
logged) re-scored gives, per response, the likelihoods LLDGRPOTrainer (method grpo, same seed) recorded;
windows, token ids, round-trip reporting, resume, several processes, bad input."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import train_settings
from lld_probe.integrations.trl.run import make_trainer
from lld_probe.rescore import plan_windows, rescore
from lld_probe.store.run_store import read_run_store

KEY = ["step", "group_id", "response_index"]
STEPS = 4


def _settings(out, probes):
    return train_settings(out=str(out), method="grpo", steps=STEPS, prompts_per_step=2, group_size=4, eval_every=0,
                         probe_set_size=4, probe_every=1, progress=False, probes=probes,
                         save_steps=1 if not probes else 0, extra={"log_completions": True} if not probes else {})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A plain GRPOTrainer run (checkpoint-1..4, completions/, and a token dump kept aside) and the probed
    LLDGRPOTrainer run with the same seed."""
    from lld_probe.integrations.trl import add_token_dump
    tmp = tmp_path_factory.mktemp("rescore")
    plain, _ = make_trainer(_settings(tmp / "plain", probes=False))
    add_token_dump(plain, tmp / "dump")
    plain.train()
    probed, _ = make_trainer(_settings(tmp / "probed", probes=True))
    probed.train()
    text = tmp / "text-store"
    summary = rescore(tmp / "plain", text, initial_model="tiny", probe_set_size=4, progress=False)
    return {"tmp": tmp, "plain": tmp / "plain", "probed": read_run_store(tmp / "probed"), "dump": tmp / "dump",
            "text": text, "summary": summary}


def _run_folder(runs, name, checkpoints, completions=True, dump=False) -> Path:
    """A TRL output_dir with some of the plain run's checkpoints (linked) and its logs."""
    folder = runs["tmp"] / name
    folder.mkdir()
    for step in checkpoints:
        (folder / f"checkpoint-{step}").symlink_to(runs["plain"] / f"checkpoint-{step}", target_is_directory=True)
    if completions:
        shutil.copytree(runs["plain"] / "completions", folder / "completions")
    if dump:
        shutil.copytree(runs["dump"], folder / "lld_tokens")
    return folder


def _merged(a, b, on=KEY):
    return a.merge(b, on=on, suffixes=("_r", "_p"), validate="one_to_one")


@pytest.mark.integration
def test_rescored_plain_run_equals_the_probed_run_per_response(runs):
    rescored, probed = read_run_store(runs["text"]), runs["probed"]
    assert sorted(rescored.responses["step"].unique()) == list(range(1, STEPS + 1))
    both = _merged(rescored.responses, probed.responses)
    assert len(both) == len(probed.responses) == len(rescored.responses)
    assert (both["completion_r"] == both["completion_p"]).all()           # the same trajectory, the same samples
    assert (both["n_tokens_r"] == both["n_tokens_p"]).all()
    # after: the same packed scoring of the same checkpoint; before: TRL's loss forward vs a packed forward
    np.testing.assert_allclose(both["logp_after_r"], both["logp_after_p"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(both["logp_before_r"], both["logp_before_p"], rtol=0, atol=1e-4)
    assert (both["advantage_r"] == both["advantage_p"]).all() and (both["correct_r"] == both["correct_p"]).all()
    assert (rescored.responses["window_steps"] == 1).all()
    assert (rescored.responses["checkpoint_after"] == rescored.responses["step"]).all()
    assert (rescored.responses["tokenization"] == "text").all() and rescored.responses["roundtrip_ok"].all()
    tokens = _merged(rescored.tokens, probed.tokens, KEY + ["position"])
    assert len(tokens) == len(probed.tokens)
    assert (tokens["token_id_r"] == tokens["token_id_p"]).all()
    assert (tokens["nthr_selected_r"] == tokens["nthr_selected_p"]).all()
    np.testing.assert_allclose(tokens["nthr_score_r"], tokens["nthr_score_p"], rtol=1e-4, atol=1e-3)
    # the probe set: the same draw, the same trajectories
    probe = _merged(read_run_store(runs["text"]).probe_set, probed.probe_set, ["step", "probe_id"])
    assert len(probe) == len(probed.probe_set)
    np.testing.assert_allclose(probe["logp_r"], probe["logp_p"], rtol=0, atol=1e-4)


@pytest.mark.integration
def test_logp_after_against_an_independent_float64_forward(runs):
    """Step 2's responses at checkpoint-2 in float64, full rows: the state at t-1 predicts token t."""
    from transformers import AutoModelForCausalLM
    from lld_probe.models import load_model
    _, tokenizer = load_model("tiny")
    store = read_run_store(runs["text"])
    model = AutoModelForCausalLM.from_pretrained(runs["plain"] / "checkpoint-2", dtype=torch.float64).eval()
    rows = store.responses[store.responses["step"] == 2].head(3)
    for row in rows.itertuples():
        prompt = tokenizer(text=row.prompt)["input_ids"]
        completion = tokenizer(text=row.completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0].double(), -1)
        expected = sum(float(logps[len(prompt) + j - 1, token]) for j, token in enumerate(completion))
        assert math.isclose(row.logp_after, expected, abs_tol=1e-4)
        tokens = store.tokens[(store.tokens["group_id"] == row.group_id) &
                              (store.tokens["response_index"] == row.response_index)].sort_values("position")
        assert tokens["token_id"].tolist() == completion


@pytest.mark.integration
def test_token_dump_gives_the_sampled_ids_and_the_same_numbers(runs):
    folder = _run_folder(runs, "with-dump", range(1, STEPS + 1), completions=False, dump=True)
    out = runs["tmp"] / "dump-store"
    rescore(folder, out, initial_model="tiny", progress=False)
    exact, text = read_run_store(out).responses, read_run_store(runs["text"]).responses
    assert (exact["tokenization"] == "ids").all()
    both = _merged(exact, text)
    assert len(both) == len(text)
    np.testing.assert_array_equal(both["logp_after_r"], both["logp_after_p"])
    np.testing.assert_array_equal(both["logp_before_r"], both["logp_before_p"])
    dump = pd.read_parquet(next((runs["dump"]).glob("step=000001*.parquet")))
    assert {"prompt_ids", "completion_ids", "advantage", "reward", "reward_correct", "sampler_logps", "old_policy_logps"} <= set(dump.columns)


@pytest.mark.integration
def test_a_checkpoint_every_two_steps_gives_windows_of_two(runs):
    folder = _run_folder(runs, "every-two", [2, 4])
    out = runs["tmp"] / "every-two-store"
    rescore(folder, out, initial_model="tiny", progress=False)
    windows = read_run_store(out).responses
    assert sorted(windows["step"].unique()) == [1, 2, 3, 4]
    assert (windows["window_steps"] == 2).all()
    assert windows.groupby("step")["checkpoint_after"].first().tolist() == [2, 2, 4, 4]
    # logp_after of step 2 and logp_before of step 3 are the consecutive run's (the same checkpoint)
    consecutive = read_run_store(runs["text"]).responses
    both = _merged(windows, consecutive)
    at_two = both[both["step"] == 2]
    np.testing.assert_array_equal(at_two["logp_after_r"], at_two["logp_after_p"])
    at_three = both[both["step"] == 3]
    np.testing.assert_array_equal(at_three["logp_before_r"], at_three["logp_before_p"])


def test_plan_windows_rules():
    windows, skipped = plan_windows([1, 2, 3, 4, 5], [0, 2, 4], span=1)
    assert [(w.step, w.before, w.after) for w in windows] == [(1, 0, 2), (2, 0, 2), (3, 2, 4), (4, 2, 4)]
    assert list(skipped) == [5]
    windows, skipped = plan_windows([1, 2, 3, 4], [0, 2, 4], span=2)        # a batch used for two steps
    assert [(w.step, w.logged_step, w.window_steps) for w in windows] == [(2, 1, 2), (4, 3, 2)]
    assert sorted(skipped) == [2, 4]
    windows, skipped = plan_windows([1, 2], [1, 2], span=1)                 # no initial model
    assert [w.step for w in windows] == [2] and "initial" in skipped[1]


@pytest.mark.integration
def test_text_that_does_not_round_trip_is_reported_and_left_unmeasured(runs, tmp_path):
    folder = _run_folder(runs, "not-roundtrip", range(1, STEPS + 1))
    file = folder / "completions" / "completions_00002.parquet"
    frame = pd.read_parquet(file)
    frame.loc[1, "completion"] = frame.loc[1, "completion"] + " é"        # no such character in the vocabulary
    frame.to_parquet(file)
    out = runs["tmp"] / "not-roundtrip-store"
    summary = rescore(folder, out, initial_model="tiny", progress=False)
    assert (summary.not_roundtrip, summary.text_responses) == (1, STEPS * 8)
    assert "1 of 32 re-tokenised responses do not round-trip" in summary.line()
    responses = read_run_store(out).responses
    bad = responses[~responses["roundtrip_ok"]]
    assert len(bad) == 1 and bad["step"].item() == 2 and math.isnan(bad["logp_after"].item())
    assert bad["n_tokens"].item() == 0
    from lld_probe.analysis.report import write_report
    text = write_report([out], tmp_path / "report").read_text()
    assert "do not round-trip" in text


@pytest.mark.integration
def test_a_killed_rescore_resumes_and_redoes_nothing(runs, monkeypatch):
    from lld_probe.rescore import runner
    folder = _run_folder(runs, "killed", range(1, STEPS + 1))
    out = runs["tmp"] / "killed-store"
    real, calls = runner.load_checkpoint, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed for the test")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "load_checkpoint", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        rescore(folder, out, initial_model="tiny", probe_set_size=4, progress=False)
    assert sorted(read_run_store(out).responses["step"].unique()) == [1]          # loads, with what was finished
    monkeypatch.setattr(runner, "load_checkpoint", real)
    summary = rescore(folder, out, initial_model="tiny", probe_set_size=4, progress=False)
    assert summary.checkpoints_loaded == STEPS + 1 - 2                            # the two finished ones are not redone
    resumed, fresh = read_run_store(out), read_run_store(runs["text"])
    pd.testing.assert_frame_equal(resumed.responses, fresh.responses)
    pd.testing.assert_frame_equal(resumed.tokens, fresh.tokens)
    pd.testing.assert_frame_equal(resumed.probe_set, fresh.probe_set)
    assert resumed.meta["restarts"] == 1


@pytest.mark.integration
@pytest.mark.distributed
def test_two_processes_equal_one(runs):
    out = runs["tmp"] / "two-processes"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lld_probe", "rescore",
               str(runs["plain"]), "--out", str(out), "--initial-model", "tiny", "--probe-set", "4", "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rescore: 4 steps" in done.stdout and "on 2 process(es)" in done.stdout
    two, one = read_run_store(out), read_run_store(runs["text"])
    pd.testing.assert_frame_equal(two.responses, one.responses)
    pd.testing.assert_frame_equal(two.tokens, one.tokens)
    pd.testing.assert_frame_equal(two.probe_set, one.probe_set)
    assert two.meta["rescore_processes"] == 2


def _cli_error(capsys, *argv) -> str:
    from lld_probe.cli import main
    assert main(["rescore", *map(str, argv), "--no-progress"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("lld-probe: error: "), errors
    return errors[0]


@pytest.mark.integration
def test_bad_input_is_one_line_naming_it(runs, capsys):
    tmp = runs["tmp"]
    folder = _run_folder(runs, "bad", range(1, STEPS + 1))
    # the checkpoints' own tokenizer (AutoTokenizer maps the tiny model to Qwen2's, which drops spaces)
    message = _cli_error(capsys, folder, "--out", tmp / "bad-1", "--initial-model", "tiny",
                         "--tokenizer", folder / "checkpoint-1")
    assert "checkpoint-1" in message and "does not reproduce the logged text" in message
    # a checkpoint folder that is not a model
    broken = tmp / "bad-checkpoint"
    shutil.copytree(folder / "completions", broken / "completions")
    shutil.copytree(runs["plain"] / "checkpoint-1", broken / "checkpoint-1")
    (broken / "checkpoint-1" / "model.safetensors").write_bytes(b"not weights")
    message = _cli_error(capsys, broken, "--out", tmp / "bad-2", "--initial-model", "tiny")
    assert "checkpoint-1" in message and "not a loadable model" in message
    (broken / "checkpoint-2").mkdir()
    shutil.copy(runs["plain"] / "checkpoint-1" / "training_args.bin", broken / "checkpoint-2")
    message = _cli_error(capsys, broken, "--out", tmp / "bad-3", "--initial-model", "tiny")
    assert "checkpoint-2" in message and "config.json" in message
    # no logged step with checkpoints on both sides: the steps are named
    lone = _run_folder(runs, "lone", [STEPS])
    message = _cli_error(capsys, lone, "--out", tmp / "bad-4")
    assert "no logged step has checkpoints on both sides" in message and "step 1" in message
    # no completions logged
    message = _cli_error(capsys, _run_folder(runs, "no-log", [1], completions=False), "--out", tmp / "bad-5")
    assert "log_completions=True" in message
    # resuming a re-scoring with other settings
    message = _cli_error(capsys, runs["plain"], "--out", runs["text"], "--initial-model", "tiny", "--probe-set", "4",
                         "--nthr-beta", "0.5")
    assert "other settings" in message and "nthr_beta 1.0 -> 0.5" in message
    # an output folder that holds another run
    message = _cli_error(capsys, folder, "--out", runs["tmp"] / "probed", "--initial-model", "tiny")
    assert "already holds a run store" in message


@pytest.mark.integration
def test_report_and_figures_read_a_rescored_run(runs, tmp_path):
    from lld_probe.analysis import load
    from lld_probe.analysis.report import write_report
    run = load(runs["text"])
    assert run.responses["logp_after"].notna().all()
    summary = write_report([runs["text"]], tmp_path / "report")
    text = summary.read_text()
    assert "lld_rate" in text and "Re-scored from checkpoints" in text
    figures = {p.name for p in (tmp_path / "report" / "figures").rglob("*.png")}
    assert any(name.startswith("probe_trajectories") for name in figures)
    assert any(name.startswith("fig3_token_scores") for name in figures)


def test_bench_prints_one_line(capsys):
    from lld_probe.bench_rescore import run_rescore_benchmark
    result = run_rescore_benchmark(prompts=2, group_size=4, length=16, repeats=1)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("bench rescore (tiny") and "responses/s" in line
    assert result["responses"] == 8 and result["responses_per_s"] > 0 and result["ratio_to_forward"] > 0


@pytest.mark.integration
def test_our_store_rescored_with_a_checkpoint_pattern(runs):
    """The probed run's own store (its token ids) with the plain run's checkpoints (the same trajectory)."""
    out = runs["tmp"] / "from-store"
    rescore(runs["tmp"] / "probed", out, initial_model="tiny", checkpoints=str(runs["plain"] / "checkpoint-{step}"),
            progress=False)
    rescored, probed = read_run_store(out).responses, runs["probed"].responses
    assert (rescored["tokenization"] == "ids").all()
    both = _merged(rescored, probed)
    assert len(both) == len(probed)
    np.testing.assert_allclose(both["logp_after_r"], both["logp_after_p"], rtol=0, atol=1e-5)


@pytest.mark.integration
def test_verl_dumps_with_a_checkpoint_pattern(runs):
    """verl's rollout dumps ({step}.jsonl: input, output, score) and HF checkpoint folders by pattern."""
    import json
    folder = runs["tmp"] / "verl"
    folder.mkdir()
    for file in sorted((runs["plain"] / "completions").glob("*.parquet")):
        frame = pd.read_parquet(file)
        step = int(frame["step"].iloc[0])
        lines = [json.dumps({"input": p, "output": c, "score": float(s), "step": step})
                 for p, c, s in zip(frame["prompt"], frame["completion"], frame["correct"])]
        (folder / f"{step}.jsonl").write_text("\n".join(lines) + "\n")
    out = runs["tmp"] / "verl-store"
    summary = rescore(folder, out, initial_model="tiny", checkpoints=str(runs["plain"] / "checkpoint-{step}"),
                      progress=False)
    assert summary.not_roundtrip == 0
    rescored, text = read_run_store(out).responses, read_run_store(runs["text"]).responses
    both = rescored.merge(text, on=["step", "completion", "prompt"], suffixes=("_r", "_p"))
    assert len(rescored) == len(text)
    np.testing.assert_allclose(both["logp_after_r"], both["logp_after_p"], rtol=0, atol=1e-5)


def _float64_logp(model, prompt_ids, completion_ids) -> float:
    """A response's summed log-likelihood in float64, one full row: the state at t-1 predicts token t."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(float(logps[len(prompt_ids) + j - 1, token]) for j, token in enumerate(completion_ids))


@pytest.fixture(scope="module")
def two_step_generations(tmp_path_factory):
    """A plain GRPOTrainer run whose generation batches each feed two optimizer steps (steps_per_generation=2,
    gradient_accumulation_steps=1): checkpoint-1..4, completions/ and the token dump."""
    from lld_probe.integrations.trl import add_token_dump
    tmp = tmp_path_factory.mktemp("rescore-spg")
    settings = train_settings(out=str(tmp / "plain"), method="grpo", steps=STEPS, prompts_per_step=2, group_size=4,
                              eval_every=0, probe_set_size=0, progress=False, probes=False, save_steps=1,
                              extra={"log_completions": True, "steps_per_generation": 2,
                                     "gradient_accumulation_steps": 1})
    trainer, _ = make_trainer(settings)
    add_token_dump(trainer)
    trainer.train()
    return tmp


@pytest.mark.integration
@pytest.mark.parametrize("source", ["ids", "text"])
def test_steps_per_generation_two_brackets_each_batch_by_its_two_optimizer_steps(two_step_generations, source):
    from transformers import AutoModelForCausalLM
    from lld_probe.models.tiny import TINY_DIR
    tmp = two_step_generations
    run = tmp / "plain"
    if source == "text":                                  # the completions log alone, re-tokenised
        run = tmp / "text-only"
        run.mkdir(exist_ok=True)
        for step in range(1, STEPS + 1):
            link = run / f"checkpoint-{step}"
            if not link.exists():
                link.symlink_to(tmp / "plain" / f"checkpoint-{step}", target_is_directory=True)
        shutil.copytree(tmp / "plain" / "completions", run / "completions", dirs_exist_ok=True)
    out = tmp / f"store-{source}"
    summary = rescore(run, out, initial_model="tiny", progress=False)
    store = read_run_store(out).responses
    # one generation batch of 16 responses per two optimizer steps: sampled after step 0 and after step 2,
    # stored under the optimizer step after which logp_after is measured (as the probes store it)
    assert sorted(store["step"].unique()) == [2, 4] and len(store) == 2 * 16
    assert (store["tokenization"] == source).all() and store["roundtrip_ok"].all()
    assert (store["window_steps"] == 2).all()
    assert store.groupby("step")["checkpoint_before"].first().tolist() == [0, 2]
    assert store.groupby("step")["checkpoint_after"].first().tolist() == [2, 4]
    # TRL's completions log repeats a generation batch at each optimizer step that uses it; the dump holds it once
    if source == "text":
        assert sorted(summary.skipped) == [2, 4]
        assert all("the same generation batch" in why for why in summary.skipped.values())
    else:
        assert summary.skipped == {}
    # an independent float64 re-score of every sampled response at the two bracketing checkpoints
    dump = pd.concat([pd.read_parquet(f) for f in sorted((tmp / "plain" / "lld_tokens").glob("*.parquet"))])
    assert sorted(dump["step"].unique()) == [1, 3] and len(dump) == 2 * 16
    models = {0: TINY_DIR, 2: tmp / "plain" / "checkpoint-2", 4: tmp / "plain" / "checkpoint-4"}
    models = {k: AutoModelForCausalLM.from_pretrained(v, dtype=torch.float64).eval() for k, v in models.items()}
    for logged, step, before, after in ((1, 2, 0, 2), (3, 4, 2, 4)):
        rows = dump[dump["step"] == logged].sort_values("row")
        stored = store[store["step"] == step].sort_values(["group_id", "response_index"],
                                                         key=lambda c: c.map(_group_order) if c.name == "group_id" else c)
        assert stored["completion"].tolist() == rows["completion"].tolist()
        expected_before = [_float64_logp(models[before], p, c) for p, c in zip(rows["prompt_ids"], rows["completion_ids"])]
        expected_after = [_float64_logp(models[after], p, c) for p, c in zip(rows["prompt_ids"], rows["completion_ids"])]
        np.testing.assert_allclose(stored["logp_before"], expected_before, rtol=0, atol=1e-4)
        np.testing.assert_allclose(stored["logp_after"], expected_after, rtol=0, atol=1e-4)
        # TRL computes the old policy's token log-probs for a batch it reuses: the dump holds them, aligned
        assert rows["old_policy_logps"].notna().all()
        np.testing.assert_allclose([sum(logps) for logps in rows["old_policy_logps"]], expected_before, rtol=0,
                                   atol=1e-4)


def _group_order(group_id: str) -> int:
    return int(str(group_id).split(":")[1])


@pytest.mark.integration
def test_verl_token_dump_rows_are_read_by_uid_and_rescored_from_their_ids(runs):
    """verl rollout dump rows with the token dump's columns (as lld_probe.integrations.verl's trainers write them:
    store.token_dump.dump_columns), rows scattered as verl's balance_batch leaves them: the reader groups them by
    uid and keeps the columns; rescore takes the token ids (no re-tokenising)."""
    import json
    from lld_probe.analysis import load
    from lld_probe.store.schema import TOKEN_DUMP_COLUMNS
    from lld_probe.store.token_dump import dump_columns
    folder = runs["tmp"] / "verl-ids"
    folder.mkdir()
    scatter = np.random.default_rng(0).permutation(8)
    for file in sorted(runs["dump"].glob("*.parquet")):
        frame = pd.read_parquet(file).sort_values("row").iloc[scatter].reset_index(drop=True)
        step = int(frame["step"].iloc[0])
        columns = dump_columns(uid=[f"uid-{step}-{row // 4}" for row in frame["row"]], prompt_ids=frame["prompt_ids"],
                               completion_ids=frame["completion_ids"], advantage=frame["advantage"],
                               old_policy_logps=[[-1.0] * len(ids) for ids in frame["completion_ids"]])
        lines = [json.dumps({"input": p, "output": c, "score": float(r), "step": step,
                             **{name: values[i] for name, values in columns.items()}})
                 for i, (p, c, r) in enumerate(zip(frame["prompt"], frame["completion"], frame["reward"]))]
        (folder / f"{step}.jsonl").write_text("\n".join(lines) + "\n")
    run = load(folder)
    assert set(TOKEN_DUMP_COLUMNS) <= set(run.responses.columns)
    for gid, rows in run.responses.groupby("group_id"):          # one uid, one prompt per group, G responses
        assert rows["uid"].nunique() == 1 and rows["prompt"].nunique() == 1 and len(rows) == 4, gid
        assert sorted(rows["response_index"]) == [0, 1, 2, 3]
    first = run.responses[run.responses["step"] == 1]
    assert first["group_id"].iloc[0] == "1:0" and first["uid"].iloc[0] == f"uid-1-{scatter[0] // 4}"
    out = runs["tmp"] / "verl-ids-store"
    summary = rescore(folder, out, initial_model="tiny", checkpoints=str(runs["plain"] / "checkpoint-{step}"),
                      progress=False)
    assert summary.text_responses == 0
    rescored = read_run_store(out).responses
    assert (rescored["tokenization"] == "ids").all() and len(rescored) == STEPS * 8
    text = read_run_store(runs["text"]).responses.drop_duplicates(["step", "prompt", "completion"])
    both = rescored.merge(text, on=["step", "prompt", "completion"], suffixes=("_r", "_p"), validate="many_to_one")
    assert len(both) == len(rescored)
    np.testing.assert_allclose(both["logp_after_r"], both["logp_after_p"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(both["logp_before_r"], both["logp_before_p"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(both["advantage_r"], both["advantage_p"], rtol=0, atol=1e-6)


# --- prompts without logged token ids ------------------------------------------------------------------------
TEMPLATE = ("{% for m in messages %}<bos>{{ m['role'] }}:{% if style is defined %}{{ style }}:{% endif %}"
            "{{ m['content'] }}<eos>{% endfor %}{% if add_generation_prompt %}<bos>assistant:{% endif %}")


def _tiny_tokenizer(template=None):
    from lld_probe.models import load_model
    _, tokenizer = load_model("tiny")
    tokenizer.chat_template = template
    return tokenizer


def _rows(prompt, completion="12", prompt_ids=None):
    frame = pd.DataFrame({"prompt": [prompt], "completion": [completion]})
    if prompt_ids is not None:
        frame["prompt_ids"] = [prompt_ids]
    return frame


def test_a_verl_prompt_that_lost_its_chat_template_tokens_is_marked_and_left_unmeasured():
    """verl logs decode(prompt_ids, skip_special_tokens=True): with a chat template that renders special
    tokens, the text lost them and re-tokenising it as plain text would score another prompt."""
    from lld_probe.rescore.prompts import VERL_FORM, PromptBuilder, PromptRule
    from lld_probe.rescore.tokens import step_tokens
    tokenizer = _tiny_tokenizer(TEMPLATE)
    sampled = tokenizer.apply_chat_template([{"role": "user", "content": "1+1="}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
    logged = tokenizer.decode(sampled, skip_special_tokens=True)             # what verl writes
    assert logged == "user:1+1=assistant:"
    prompts = PromptBuilder(tokenizer, PromptRule(VERL_FORM))
    tokens = step_tokens(_rows(logged), tokenizer, prompts, max_completion_length=None)
    assert tokens.prompt_ok == [False] and tokens.completion_ids == [[]] and tokens.roundtrip_ok == [True]
    assert "skip_special_tokens=True" in next(iter(prompts.problems))
    # no chat template (nothing special to lose): plain text, checked by its round trip, scored
    plain = step_tokens(_rows(logged), _tiny_tokenizer(), PromptBuilder(_tiny_tokenizer(), PromptRule(VERL_FORM)),
                        max_completion_length=None)
    assert plain.prompt_ok == [True] and plain.prompt_ids[0] == tokenizer(text=logged)["input_ids"]
    # logged prompt ids are taken as they are
    exact = step_tokens(_rows(logged, prompt_ids=sampled), tokenizer, prompts, max_completion_length=None)
    assert exact.prompt_ok == [True] and exact.prompt_ids == [list(sampled)] and exact.completion_ids[0]


def test_trl_conversations_take_the_runs_chat_template_kwargs_and_tools_mark_them():
    from lld_probe.rescore.prompts import TRL_FORM, PromptBuilder, PromptRule
    from lld_probe.rescore.tokens import step_tokens
    tokenizer = _tiny_tokenizer(TEMPLATE)
    messages = [{"role": "user", "content": "2+2="}]
    trained = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                            style="short")["input_ids"]          # as TRL with chat_template_kwargs
    rule = PromptRule(TRL_FORM, {"style": "short"})
    tokens = step_tokens(_rows(messages), tokenizer, PromptBuilder(tokenizer, rule), max_completion_length=None)
    assert tokens.prompt_ids == [list(trained)] and tokens.prompt_ok == [True]
    with_tools = PromptRule(TRL_FORM, {"style": "short"}, conversation_unverifiable="tools")
    tokens = step_tokens(_rows(messages), tokenizer, PromptBuilder(tokenizer, with_tools), max_completion_length=None)
    assert tokens.prompt_ok == [False] and tokens.completion_ids == [[]]
    # a text prompt is tokenised as is (TRL) and checked by its round trip
    text = step_tokens(_rows("3+3="), tokenizer, PromptBuilder(tokenizer, rule), max_completion_length=None)
    assert text.prompt_ok == [True] and text.prompt_ids == [tokenizer(text="3+3=")["input_ids"]]


def test_a_stored_conversation_is_rebuilt_from_its_ids_or_marked():
    """Our stores keep the prompt's printed form in `prompt`; the ids (prompt_ids) are what is re-scored, and a
    store without them cannot say how the conversation was tokenised."""
    from lld_probe.rescore.prompts import TRL_FORM, PromptBuilder, PromptRule
    from lld_probe.rescore.tokens import step_tokens
    tokenizer = _tiny_tokenizer(TEMPLATE)
    messages = [{"role": "user", "content": "2+2="}]
    printed = str(messages)
    builder = PromptBuilder(tokenizer, PromptRule(TRL_FORM, printed_conversations=True))
    old = step_tokens(_rows(printed), tokenizer, builder, max_completion_length=None)
    assert old.prompt_ok == [False] and old.completion_ids == [[]]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)["input_ids"]
    new = step_tokens(_rows(printed, prompt_ids=ids), tokenizer, builder, max_completion_length=None)
    assert new.prompt_ok == [True] and new.prompt_ids == [list(ids)]


def _store_copy(runs, name, change) -> Path:
    """The probed run's store copied, each responses file changed by `change(frame)`."""
    folder = runs["tmp"] / name
    shutil.copytree(runs["tmp"] / "probed", folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    for file in sorted((folder / "responses").glob("*.parquet")):
        change(pd.read_parquet(file)).to_parquet(file)
    return folder


def _printed_conversation(frame):
    frame["prompt"] = [str([{"role": "user", "content": p}]) for p in frame["prompt"]]
    return frame


@pytest.mark.integration
def test_a_stores_conversational_prompts_are_rescored_from_their_ids_and_its_scalars_copied(runs):
    """A conversation's prompt column holds its printed form: the re-scoring takes the stored prompt ids (the
    probed run's numbers); a store without them marks every such prompt. The scalars (per-step files) come along."""
    pattern = str(runs["plain"] / "checkpoint-{step}")
    probed = runs["probed"]
    assert probed.responses["prompt_ids"].map(len).gt(0).all()
    store = _store_copy(runs, "store-conversation", _printed_conversation)
    summary = rescore(store, runs["tmp"] / "store-conversation-out", initial_model="tiny", checkpoints=pattern,
                      progress=False)
    rescored = read_run_store(runs["tmp"] / "store-conversation-out")
    assert summary.prompt_not_verified == 0 and rescored.responses["prompt_ok"].all()
    both = _merged(rescored.responses, probed.responses)
    np.testing.assert_allclose(both["logp_after_r"], both["logp_after_p"], rtol=0, atol=1e-5)
    assert len(probed.scalars)
    copied = rescored.scalars.merge(probed.scalars, on=["step", "name"], suffixes=("_r", "_p"))
    assert len(copied) == len(probed.scalars)
    np.testing.assert_array_equal(copied["value_r"], copied["value_p"])
    # a store written before prompt ids were recorded: the printed conversation cannot be re-tokenised
    old = _store_copy(runs, "store-conversation-old", lambda f: _printed_conversation(f).drop(columns="prompt_ids"))
    summary = rescore(old, runs["tmp"] / "store-conversation-old-out", initial_model="tiny", checkpoints=pattern,
                      progress=False)
    marked = read_run_store(runs["tmp"] / "store-conversation-old-out").responses
    assert summary.prompt_not_verified == len(marked) == len(probed.responses)
    assert not marked["prompt_ok"].any() and marked["logp_after"].isna().all()
    assert f"{len(marked)} of {len(marked)} prompts not verified" in summary.line()
    assert any("printed text" in warning for warning in summary.warnings)


def _verl_folder(runs, name, score) -> Path:
    """The plain run's completions as verl rollout dumps ({step}.jsonl), each response's score from score(frame)."""
    import json
    folder = runs["tmp"] / name
    folder.mkdir()
    for file in sorted((runs["plain"] / "completions").glob("*.parquet")):
        frame = pd.read_parquet(file)
        step = int(frame["step"].iloc[0])
        lines = [json.dumps({"input": p, "output": c, "score": float(s), "step": step})
                 for p, c, s in zip(frame["prompt"], frame["completion"], score(frame))]
        (folder / f"{step}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.integration
def test_non_binary_rewards_take_the_probes_advantage_sign_rule(runs):
    """No --correct-threshold: correct = reward above its group's mean (core.correctness), recorded in meta."""
    from lld_probe.core.correctness import DEFAULT_RULE
    graded = _verl_folder(runs, "verl-graded", lambda f: f["correct"].astype(float) * 0.5 +
                          np.arange(len(f)) % 3 * 0.25)         # exact in binary: means without rounding
    out = runs["tmp"] / "verl-graded-store"
    rescore(graded, out, initial_model="tiny", checkpoints=str(runs["plain"] / "checkpoint-{step}"), progress=False)
    store = read_run_store(out)
    assert store.meta["correctness_rule"] == DEFAULT_RULE
    responses = store.responses
    assert not set(responses["reward"].unique()) <= {0.0, 1.0}
    expected = responses["reward"] > responses.groupby(["step", "group_id"])["reward"].transform("mean")
    assert (responses["correct"].astype(bool) == expected).all() and 0 < expected.sum() < len(expected)


@pytest.mark.integration
def test_steps_dropped_by_the_reader_are_printed_and_recorded(runs, capsys):
    """A verl dump whose last line is cut (a run still writing it): the step is named on the command line, one
    line per warning, and in meta.json's skipped_steps."""
    from lld_probe.cli import main
    folder = _verl_folder(runs, "verl-cut", lambda f: f["correct"])
    last = folder / f"{STEPS}.jsonl"
    last.write_text(last.read_text()[:-20])
    out = runs["tmp"] / "verl-cut-store"
    assert main(["rescore", str(folder), "--out", str(out), "--initial-model", "tiny", "--no-progress",
                 "--checkpoints", str(runs["plain"] / "checkpoint-{step}")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"skipped step {STEPS}: {STEPS}.jsonl: truncated last line") for line in printed)
    assert any(line.startswith("warning: ") and "truncated last line" in line for line in printed)
    meta = read_run_store(out).meta
    assert "truncated last line" in meta["skipped_steps"][str(STEPS)]
    assert any("truncated last line" in warning for warning in meta["rescore_warnings"])
    assert sorted(read_run_store(out).responses["step"].unique()) == list(range(1, STEPS))
