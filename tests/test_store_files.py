"""The run store's files: scalars and the probe set are appended without rewriting what is on disk, older
stores read under the current column names, and TRL's pickled training arguments are read without running
code from the file."""

from __future__ import annotations

import json
import os

import pandas as pd
import torch

from lld_probe.analysis.pickled_state import read_pickled_attributes
from lld_probe.store.run_store import RunStoreWriter, read_run_store


def test_appending_scalars_and_probe_rows_touches_only_that_steps_file(tmp_path):
    store = RunStoreWriter(tmp_path)
    store.write_meta({"method": "grpo"})
    store.append_scalars(1, {"loss": 0.5, "reward": 1.0, "flag": True, "note": "x"})
    first = tmp_path / "scalars" / "step=000001.parquet"
    stamp = first.stat().st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))
    store.append_scalars(2, {"loss": 0.25})
    store.append_scalars(2, {"loss": 0.125, "eval/accuracy": 0.75})       # logged twice: the last value stays
    assert first.stat().st_mtime_ns == stamp - 10**9                      # step 1's file was not rewritten
    store.append_probe_set(pd.DataFrame({"step": 0, "probe_id": [0, 1], "kind": "correct", "question_id": "q",
                                         "n_tokens": 3, "logp": [-1.0, -2.0]}))
    run = read_run_store(tmp_path)
    assert run.meta["schema_version"] == 2
    assert run.scalars.set_index(["step", "name"])["value"].to_dict() == {
        (1, "loss"): 0.5, (1, "reward"): 1.0, (2, "loss"): 0.125, (2, "eval/accuracy"): 0.75}
    assert run.probe_set["logp"].tolist() == [-1.0, -2.0]
    store.truncate_after(1)
    assert sorted(read_run_store(tmp_path).scalars["step"]) == [1, 1]


def test_a_schema_1_store_reads_under_the_current_names(tmp_path):
    (tmp_path / "responses").mkdir()
    (tmp_path / "tokens").mkdir()
    (tmp_path / "meta.json").write_text(json.dumps({"method": "nthr"}))
    responses = pd.DataFrame({"step": [1], "question_id": ["q"], "group_id": ["1:0"], "response_index": [0],
                              "prompt": ["p"], "completion": ["c"], "reward": [1.0], "correct": [True],
                              "advantage": [0.5], "n_tokens": [1], "logp_before": [-1.0], "logp_after": [-0.5],
                              "selected_fraction": [0.0], "nthr_selected_fraction": [0.0], "truncated": [False]})
    responses.to_parquet(tmp_path / "responses" / "step=000001.parquet")
    pd.DataFrame({"step": [1], "group_id": ["1:0"], "response_index": [0], "token_id": [5], "position": [0],
                  "logp_before": [-1.0], "logp_after": [-0.5], "nthr_score": [0.0], "selected": [False],
                  "nthr_selected": [False], "entropy": [0.1]}).to_parquet(tmp_path / "tokens" / "step=000001.parquet")
    pd.DataFrame({"step": [1], "name": ["loss"], "value": [0.3]}).to_parquet(tmp_path / "scalars.parquet")
    run = read_run_store(tmp_path)
    assert "scaled_fraction" in run.responses and "scaled" in run.tokens and "selected" not in run.tokens
    assert run.scalars["value"].tolist() == [0.3]


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch " + str(_Payload.marker),))


def test_training_args_are_read_without_running_code_from_the_file(tmp_path):
    from trl import GRPOConfig
    config = GRPOConfig(output_dir=str(tmp_path), reward_weights=[1.0, 0.2], use_cpu=True, bf16=False, report_to=[])
    torch.save(config, tmp_path / "training_args.bin")
    assert read_pickled_attributes(tmp_path / "training_args.bin")["reward_weights"] == [1.0, 0.2]
    _Payload.marker = tmp_path / "ran"
    config.reward_weights = _Payload()
    torch.save(config, tmp_path / "evil.bin")
    read_pickled_attributes(tmp_path / "evil.bin")
    assert not _Payload.marker.exists()
