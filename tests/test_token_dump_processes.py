"""The TRL token dump of a plain GRPOTrainer run on two processes (torchrun, gloo): every process writes its own
rows of each generation batch, each row exactly once, and `lld-probe rescore` reads them as one run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lld_probe.rescore import rescore
from lld_probe.store.run_store import read_run_store

TESTS = Path(__file__).resolve().parent
STEPS, PROMPTS, GROUP = 2, 3, 4          # 12 rows per step, 6 per process: the second group straddles the two


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dump-2p")
    out = tmp / "plain"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               str(TESTS / "trl_dump_worker.py"), str(out)]
    done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.distributed
def test_every_process_writes_its_rows_once(two_process_run):
    dump = two_process_run / "lld_tokens"
    names = sorted(f.name for f in dump.glob("*.parquet"))
    assert names == [f"step={s:06d}.rank={r:05d}.parquet" for s in range(1, STEPS + 1) for r in (0, 1)]
    rows = PROMPTS * GROUP
    for step in range(1, STEPS + 1):
        shards = [pd.read_parquet(dump / f"step={step:06d}.rank={r:05d}.parquet") for r in (0, 1)]
        assert [s["row"].tolist() for s in shards] == [list(range(0, rows // 2)), list(range(rows // 2, rows))]
        frame = pd.concat(shards, ignore_index=True)
        assert (frame["step"] == step).all() and frame["row"].is_unique
        # the same responses, in the same order, as TRL's own completions log (gathered over processes)
        logged = pd.read_parquet(two_process_run / "completions" / f"completions_{step:05d}.parquet")
        assert frame["completion"].tolist() == logged["completion"].tolist()
        np.testing.assert_allclose(frame["advantage"], logged["advantage"], rtol=0, atol=1e-6)
        # groups of GROUP consecutive rows share a prompt, across the two shards too
        assert all(frame["prompt"].iloc[g * GROUP: (g + 1) * GROUP].nunique() == 1 for g in range(PROMPTS))


@pytest.mark.distributed
def test_rescore_reads_both_processes_rows_as_one_run(two_process_run, tmp_path):
    exact = rescore(two_process_run, tmp_path / "ids", initial_model="tiny", progress=False)
    assert exact.text_responses == 0 and exact.responses == STEPS * PROMPTS * GROUP
    ids = read_run_store(tmp_path / "ids").responses
    assert (ids["tokenization"] == "ids").all()
    for _, indices in ids.groupby(["step", "group_id"])["response_index"]:      # whole groups, once each
        assert sorted(indices) == list(range(GROUP))
    # the text path over TRL's completions log gives the same responses and numbers
    text_run = tmp_path / "text-run"
    text_run.mkdir()
    for item in two_process_run.iterdir():
        if item.name != "lld_tokens":
            (text_run / item.name).symlink_to(item, target_is_directory=item.is_dir())
    rescore(text_run, tmp_path / "text", initial_model="tiny", progress=False)
    text = read_run_store(tmp_path / "text").responses
    both = ids.merge(text, on=["step", "group_id", "response_index"], suffixes=("_ids", "_text"), validate="one_to_one")
    assert len(both) == len(ids) and (both["completion_ids"] == both["completion_text"]).all()
    np.testing.assert_allclose(both["logp_after_ids"], both["logp_after_text"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(both["logp_before_ids"], both["logp_before_text"], rtol=0, atol=1e-6)


@pytest.mark.distributed
def test_a_missing_shard_skips_its_step_and_a_doubled_row_is_refused(two_process_run, tmp_path):
    import shutil
    from lld_probe.rescore.sources import read_token_dump
    dump = tmp_path / "lld_tokens"
    shutil.copytree(two_process_run / "lld_tokens", dump)
    assert set(pd.read_parquet(dump / "step=000001.rank=00000.parquet")["world_size"]) == {2}
    (dump / "step=000002.rank=00001.parquet").unlink()            # a run killed while writing step 2
    warnings = []
    frame = read_token_dump(dump, GROUP, warnings)
    assert sorted(frame["step"].unique()) == [1] and len(frame) == PROMPTS * GROUP
    assert len(warnings) == 1 and "step 2: 1 of 2 processes' token dump files" in warnings[0]
    # a one-process launch's file of step 1 next to the two-process shards: every row twice
    pd.concat([pd.read_parquet(dump / f"step=000001.rank={r:05d}.parquet") for r in (0, 1)]) \
        .assign(world_size=1).to_parquet(dump / "step=000001.parquet")
    with pytest.raises(ValueError, match="step 1 holds some rows twice"):
        read_token_dump(dump, GROUP)
