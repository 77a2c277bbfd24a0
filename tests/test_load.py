"""lld_probe.analysis.load on real files: a TRL output_dir from a real GRPOTrainer run, verl dumps,
our run store and protocol folders, and malformed or truncated inputs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from lld_probe.analysis import load
from lld_probe.analysis.load import group_advantages_frame
from lld_probe.core import group_advantages
from lld_probe.store import write_json, write_parquet
from lld_probe.store.run_store import RESPONSE_COLUMNS, RunStoreWriter


@pytest.fixture(scope="module")
def trl_output_dir(tmp_path_factory):
    """A plain TRL GRPOTrainer run on the tiny model with log_completions=True (2 steps)."""
    from trl import GRPOConfig, GRPOTrainer

    from lld_probe.models import load_model
    from lld_probe.tasks import get_task
    from lld_probe.integrations.trl.run import build_dataset, reward_function
    out = tmp_path_factory.mktemp("trl")
    model, tokenizer = load_model("tiny")
    task = get_task("arithmetic")
    config = GRPOConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=16, num_generations=8,
                        max_completion_length=16, learning_rate=1e-4, use_cpu=True, bf16=False, logging_steps=1,
                        report_to=[], log_completions=True, save_strategy="steps", save_steps=2,
                        disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=model, args=config, reward_funcs=[reward_function(task)],
                          train_dataset=build_dataset(task, tokenizer, 16, 0), processing_class=tokenizer)
    trainer.train()
    return out


def test_trl_output_dir(trl_output_dir):
    run = load(trl_output_dir)
    assert run.kind == "trl"
    responses = run.responses
    assert sorted(responses["step"].unique()) == [1, 2]
    assert responses.groupby("group_id").size().eq(8).all()
    assert responses["reward"].isin([0.0, 1.0]).all()
    assert responses["correct"].equals(responses["reward"] == 1.0)
    # TRL's logged advantage is the group convention with the sample std
    assert responses["advantage"].to_numpy() == pytest.approx(group_advantages_frame(responses).to_numpy(), abs=1e-4)
    assert {"loss", "reward"} <= set(run.scalars["name"])


def test_report_on_a_trl_output_dir(trl_output_dir, tmp_path):
    from lld_probe.analysis import write_report
    summary = write_report([trl_output_dir], tmp_path)
    assert "share_correct" in summary.read_text()
    assert (tmp_path / "figures" / "fig6_response_length.png").stat().st_size > 1000


def _verl_rows(step, prompts, rng):
    rows = []
    for prompt in prompts:
        for _ in range(4):
            score = float(rng.integers(0, 2))
            rows.append({"input": prompt, "output": f"answer {rng.integers(0, 9)}", "score": score, "step": step,
                         "gts": "7", "acc": score})
    return rows


def _write_jsonl(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_verl_dumps_rebuild_groups_and_advantages(tmp_path):
    rng = np.random.default_rng(0)
    for step in (1, 2):
        _write_jsonl(tmp_path / f"{step}.jsonl", _verl_rows(step, ["q1", "q2", "q3"], rng))
    run = load(tmp_path)
    assert run.kind == "verl"
    assert run.responses.groupby("group_id").size().eq(4).all()
    assert run.responses["group_id"].nunique() == 6
    rewards = torch.tensor(run.responses["reward"].to_numpy())
    expected = group_advantages(rewards, 4, std="sample", eps=1e-4).numpy()
    assert run.responses["advantage"].to_numpy() == pytest.approx(expected, abs=1e-9)


def test_verl_truncated_last_step_is_skipped_with_a_warning(tmp_path):
    rng = np.random.default_rng(1)
    _write_jsonl(tmp_path / "1.jsonl", _verl_rows(1, ["q1"], rng))
    _write_jsonl(tmp_path / "2.jsonl", _verl_rows(2, ["q1"], rng), tail='{"input": "q1", "outp')
    with pytest.warns(UserWarning, match="2.jsonl: truncated"):
        run = load(tmp_path)
    assert sorted(run.responses["step"].unique()) == [1]


def test_verl_malformed_line_names_file_and_line(tmp_path):
    rng = np.random.default_rng(2)
    rows = _verl_rows(1, ["q1"], rng)
    text = "".join(json.dumps(r) + "\n" for r in rows[:2]) + "{not json}\n" + json.dumps(rows[2]) + "\n"
    (tmp_path / "1.jsonl").write_text(text)
    _write_jsonl(tmp_path / "2.jsonl", _verl_rows(2, ["q1"], rng))
    with pytest.raises(ValueError, match=r"1\.jsonl:3: malformed JSON"):
        load(tmp_path)


def test_verl_missing_keys_are_named(tmp_path):
    (tmp_path / "1.jsonl").write_text(json.dumps({"input": "q", "score": 1.0}) + "\n")
    with pytest.raises(ValueError, match=r"1\.jsonl:1: missing keys \['output'\]"):
        load(tmp_path)


def test_non_binary_rewards_need_a_threshold(tmp_path):
    rows = [{"input": "q", "output": str(i), "score": s} for i, s in enumerate([0.2, 0.9, 0.5, 0.0])]
    _write_jsonl(tmp_path / "1.jsonl", rows)
    with pytest.warns(UserWarning, match="not binary"):
        run = load(tmp_path)
    assert run.responses["correct"].isna().all()
    run = load(tmp_path, correct_threshold=0.5)
    assert run.responses["correct"].tolist() == [False, True, True, False]


def _store_rows(step, n=4):
    frame = pd.DataFrame({c: [0.0] * n for c in RESPONSE_COLUMNS})
    frame["step"] = step
    frame["group_id"] = f"{step}:0"
    frame["prompt"] = "q"
    frame["completion"] = "a"
    frame["correct"] = [True, False] * (n // 2)
    frame["reward"] = frame["correct"].astype(float)
    return frame


def test_store_with_a_torn_last_step_loads_with_a_warning(tmp_path):
    writer = RunStoreWriter(tmp_path)
    writer.write_meta({"method": "grpo"})
    writer.write_step(1, _store_rows(1))
    (tmp_path / "responses" / "step=000002.parquet").write_bytes(b"PAR1 torn")
    with pytest.warns(UserWarning, match="step=000002.parquet: unreadable last step skipped"):
        run = load(tmp_path)
    assert run.kind == "store" and run.responses["step"].unique().tolist() == [1]


def test_store_with_a_corrupt_middle_step_names_the_file(tmp_path):
    writer = RunStoreWriter(tmp_path)
    writer.write_meta({"method": "grpo"})
    writer.write_step(1, _store_rows(1))
    writer.write_step(3, _store_rows(3))
    (tmp_path / "responses" / "step=000002.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="step=000002.parquet: not a readable Parquet file"):
        load(tmp_path)


def test_store_meta_malformed_json_names_the_line(tmp_path):
    writer = RunStoreWriter(tmp_path)
    writer.write_step(1, _store_rows(1))
    (tmp_path / "meta.json").write_text('{\n "method": grpo\n}')
    with pytest.raises(ValueError, match=r"meta.json: line 2: malformed JSON"):
        load(tmp_path)


def test_write_step_refuses_missing_columns_and_keeps_earlier_steps(tmp_path):
    writer = RunStoreWriter(tmp_path)
    writer.write_meta({"method": "grpo"})
    writer.write_step(1, _store_rows(1))
    with pytest.raises(ValueError, match="lack columns"):
        writer.write_step(2, _store_rows(2).drop(columns=["logp_after"]))
    assert load(tmp_path).responses["step"].unique().tolist() == [1]


def test_unknown_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a run store"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing")


def test_protocol_folder(tmp_path):
    from lld_probe.protocol import ProtocolConfig, run_protocol, save_protocol
    result = run_protocol(ProtocolConfig(questions=6, methods=["grpo", "nthr"], fresh_samples=0), progress=False)
    save_protocol(result, tmp_path)
    run = load(tmp_path)
    assert run.kind == "protocol"
    kept = int(result.questions["mixed"].sum())
    assert run.responses["group_id"].nunique() == 2 * kept
    assert len(run.extra["protocol"]) == 2 * kept
    assert (run.responses["step"] == 0).all()


@pytest.mark.integration
def test_a_protocol_folder_written_with_the_variant_column_reads_under_method(tmp_path):
    """Protocol folders written before the column was named `method` call it `variant` (and `mixed` `kept`):
    load, the report and the step-context section read them under the current names."""
    from lld_probe.analysis.protocol_report import write_protocol_report
    from lld_probe.protocol import ProtocolConfig, run_protocol, save_protocol
    result = run_protocol(ProtocolConfig(questions=6, methods=["grpo", "nthr"], fresh_samples=0, step_groups=2),
                          progress=False)
    save_protocol(result, tmp_path)
    old_names = {"method": "variant", "mixed": "kept"}
    for file in tmp_path.glob("*.parquet"):
        frame = pd.read_parquet(file)
        write_parquet(frame.rename(columns={k: v for k, v in old_names.items() if k in frame}), file)
    assert "variant" in pd.read_parquet(tmp_path / "protocol.parquet")
    assert "variant" in pd.read_parquet(tmp_path / "step_context.parquet")
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["settings"]["variants"] = meta["settings"].pop("methods")
    write_json(meta, tmp_path / "meta.json")

    run = load(tmp_path)
    kept = int(result.questions["mixed"].sum())
    assert set(run.extra["protocol"]["method"]) == {"grpo", "nthr"} and "variant" not in run.extra["protocol"]
    assert run.extra["questions"]["mixed"].sum() == kept
    assert set(run.responses["group_id"].str.split("|").str[1]) == {"grpo", "nthr"}
    assert run.responses["group_id"].nunique() == 2 * kept
    write_protocol_report(tmp_path, figures=False)
    summary = (tmp_path / "summary.md").read_text()
    assert "| method | questions |" in summary and "Each method against GRPO, own share alone" in summary


def test_the_protocol_command_takes_methods():
    from lld_probe.cli import _protocol_config, build_parser
    args = build_parser().parse_args(["protocol", "--methods", "grpo, nthr"])
    assert _protocol_config(args, "sgd", None).methods == ["grpo", "nthr"]
    with pytest.raises(ValueError, match=r"methods \(--methods\)"):
        _protocol_config(build_parser().parse_args(["protocol", "--methods", "grpo,dpo"]), "sgd", None).resolved()


def test_cli_report_names_bad_input_and_takes_a_threshold(tmp_path, capsys):
    from lld_probe.cli import main
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    _write_jsonl(dumps / "1.jsonl", [{"input": "q", "output": "1", "score": 0.7}, {"input": "q", "output": "2", "score": 0.2}])
    assert main(["report", str(dumps), "--out", str(tmp_path / "r"), "--correct-threshold", "0.5"]) == 0
    assert "| dumps | verl | 1 | 2 | 0.5 |" in (tmp_path / "r" / "summary.md").read_text()
    (dumps / "1.jsonl").write_text('{"input": "q", "output": "1", "score": 1}\n{"input": "q", "score": oops}\n')
    assert main(["report", str(dumps), "--out", str(tmp_path / "r2")]) == 2
    assert "1.jsonl:2: malformed JSON" in capsys.readouterr().err


def test_a_sharded_store_merges_ranks_and_skips_an_incomplete_last_step(tmp_path):
    main = RunStoreWriter(tmp_path, rank=0, is_main=True)
    other = RunStoreWriter(tmp_path, rank=1, is_main=False)
    main.write_meta({"method": "nthr", "world_size": 2})
    other.write_meta({"method": "ignored"})                 # only the main process writes run-wide files
    for step in (1, 2):
        main.write_step(step, _store_rows(step))
        other.write_step(step, _store_rows(step).assign(group_id=f"{step}:1"))
    main.write_step(3, _store_rows(3))                       # killed before rank 1 wrote step 3
    with pytest.warns(UserWarning, match="step 3 has 1 of 2 rank shards; incomplete last step skipped"):
        run = load(tmp_path)
    assert run.meta["method"] == "nthr"
    assert run.responses.groupby("step")["group_id"].apply(sorted).to_dict() == {
        1: ["1:0"] * 4 + ["1:1"] * 4, 2: ["2:0"] * 4 + ["2:1"] * 4}
    (tmp_path / "responses" / "step=000001.rank=00001.parquet").unlink()
    with pytest.raises(ValueError, match="step 1 has 1 of 2 rank shards: the store is damaged"):
        load(tmp_path)
