"""Several processes (gloo on CPU): NTHR of groups split across processes equals one process's, and a
2-process training run under torchrun stores one run whose numbers a single process reproduces."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lld_probe.core import nthr_threshold, nthr_token_scores, select_above, token_logprobs

sys.path.insert(0, str(Path(__file__).parent))
from multiprocess_workers import split_group_worker  # noqa: E402


def _random_group(seed, G=8, T=7, d=6, V=17):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(G, T, d, generator=generator, dtype=torch.float64)
    unembed = torch.randn(V, d, generator=generator, dtype=torch.float64)
    tokens = torch.randint(0, V, (G, T), generator=generator)
    lengths = torch.randint(2, T + 1, (G,), generator=generator)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    correct = torch.tensor([True, False, False, True, False, True, False, False])[:G]
    logps = token_logprobs(hidden @ unembed.T, tokens, mask)
    return {"hidden": hidden, "unembed": unembed, "tokens": tokens, "mask": mask, "correct": correct,
            "token_logps": logps}


def _run(world_size, cases, tmp_path):
    mp.spawn(split_group_worker, args=(world_size, str(tmp_path / "store"), cases, str(tmp_path)),
             nprocs=world_size, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


SETTINGS = [dict(vocab="group", anchor_self=True, beta=1.0, temperature=1.0),
            dict(vocab="full", anchor_self=False, beta=0.5, temperature=0.7)]


@pytest.mark.distributed
@pytest.mark.parametrize("world_size,bounds_list", [(2, [[0, 3, 8], [0, 1, 8]]),
                                                     (3, [[0, 3, 6, 8], [0, 0, 5, 8]])])   # a group on 2 of 3
def test_split_group_nthr_equals_one_process(tmp_path, world_size, bounds_list):
    cases = [(f"seed{seed}-{bounds}-{i}", _random_group(seed), bounds, settings)
             for seed, bounds in enumerate(bounds_list) for i, settings in enumerate(SETTINGS)]
    # measured tokens with holes (a tool's output inside completions): M+, V*, anchors over the measured ones
    holes = _random_group(7)
    holes["mask"] = holes["mask"] & (torch.arange(holes["mask"].shape[1]) % 3 != 1)[None, :]
    cases.append((f"holes-{bounds_list[0]}", holes, bounds_list[0], SETTINGS[0]))
    results = _run(world_size, cases, tmp_path)
    for name, group, bounds, settings in cases:
        whole = nthr_token_scores(group["hidden"], group["unembed"], group["tokens"], group["mask"], group["correct"],
                                  temperature=settings["temperature"], vocab=settings["vocab"],
                                  anchor_self=settings["anchor_self"], token_logprobs=group["token_logps"])
        tau = nthr_threshold(whole.anchors, group["correct"], settings["beta"])
        selected = select_above(whole.scores, group["mask"], group["correct"], tau)
        for rank in [r for r in range(world_size) if bounds[r + 1] > bounds[r]]:
            part = results[rank][name]
            rows = part["rows"]
            assert torch.allclose(part["scores"], whole.scores[rows], rtol=1e-10, atol=1e-10), name
            assert torch.allclose(part["anchors"], whole.anchors[rows], rtol=1e-10, atol=1e-10, equal_nan=True), name
            assert math.isclose(part["tau"], tau, rel_tol=1e-10), name
            assert torch.equal(part["selected"], selected[rows]), name
    assert all(r["traffic"]["nthr"] > 0 for r in results)


def _torchrun(tmp_path, out, prompts_per_step, method="nthr", *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lld_probe", "train",
               "--method", method, "--model", "tiny", "--steps", "2", "--group-size", "8",
               "--prompts-per-step", str(prompts_per_step), "--eval-every", "0", "--probe-every", "1",
               "--out", str(out), *extra]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _rescore_first_step(out):
    """Step 1's stored rows re-scored on one process at the initial model (the old policy of step 1):
    logp_before per response and the NTHR selection per token."""
    from lld_probe.analysis import load
    from lld_probe.models import load_model
    from lld_probe.scoring import build_group_batch, output_embedding_weight, score_group
    run = load(out)
    model, tokenizer = load_model("tiny")
    responses = run.responses[run.responses["step"] == 1]
    tokens = run.tokens[run.tokens["step"] == 1]
    checked = 0
    for group_id, group in responses.groupby("group_id"):
        group = group.sort_values("response_index")
        rows = [tokens[(tokens["group_id"] == group_id) & (tokens["response_index"] == i)].sort_values("position")
                for i in group["response_index"]]
        prompt_ids = tokenizer(group["prompt"].iloc[0], add_special_tokens=False)["input_ids"]
        batch = build_group_batch([prompt_ids] * len(rows), [r["token_id"].tolist() for r in rows],
                                  tokenizer.pad_token_id)
        scored = score_group(model, batch, with_hidden=True, layout="rows")
        assert scored.token_logps.sum(1).double().numpy() == pytest.approx(group["logp_before"].to_numpy(), abs=1e-4)
        correct = torch.tensor(group["correct"].to_numpy(dtype=bool))
        nthr = nthr_token_scores(scored.hidden, output_embedding_weight(model).detach(), batch.tokens, batch.mask,
                                 correct, vocab="group", token_logprobs=scored.token_logps)
        selected = select_above(nthr.scores, batch.mask, correct, nthr_threshold(nthr.anchors, correct, 1.0))
        for index, row in enumerate(rows):
            assert row["nthr_selected"].tolist() == selected[index, : len(row)].tolist(), (group_id, index)
        checked += 1
    return run, checked


def _pooled_rate(responses):
    delta = responses["logp_after"] - responses["logp_before"]
    correct = responses[responses["correct"] & delta.notna()]
    return float(((correct["logp_after"] - correct["logp_before"]) <= 0).mean())


@pytest.mark.distributed
def test_two_processes_with_a_split_group_store_one_run(tmp_path):
    out = tmp_path / "split"
    _torchrun(tmp_path, out, prompts_per_step=3)         # 2 x 12 rows per step: the second group is split 4/4
    run, checked = _rescore_first_step(out)
    assert checked == 3 and run.meta["world_size"] == 2
    assert len(run.responses) == 2 * 3 * 8
    for _, indices in run.responses.groupby(["step", "group_id"])["response_index"]:   # whole groups, once each
        assert sorted(indices) == list(range(8))
    for step, frame in run.responses.groupby("step"):        # a rate over all responses, not a mean of ranks
        assert run.scalar("lld/rate").set_index("step")["value"][step] == pytest.approx(_pooled_rate(frame))
    assert (run.scalar("lld/nthr_exchange_bytes")["value"] > 0).all()
    assert set(run.probe_set["step"]) == {0, 1, 2}


@pytest.mark.distributed
def test_two_processes_with_whole_groups_exchange_nothing_for_nthr(tmp_path):
    out = tmp_path / "whole"
    _torchrun(tmp_path, out, prompts_per_step=4)         # 2 x 16 rows: whole groups on each process
    run, checked = _rescore_first_step(out)
    assert checked == 4
    assert (run.scalar("lld/nthr_exchange_bytes")["value"] == 0).all()


class _DisagreeingProcesses:
    """A stand-in for two processes whose other rank holds a different number of rows."""
    rank, world_size, traffic = 0, 2, {}

    def all_gather_object(self, value, purpose="other"):
        return [value, (value[0] + 1, value[1])]

    def barrier(self):
        pass


def _begin(recorder, count, prompts):
    return recorder.begin_batch(1, [[1, 2]] * count, [[3]] * count, rewards=torch.ones(count),
                                deciding_rewards=torch.ones(count * recorder.comm.world_size), advantages=torch.zeros(count),
                                group_size=8, prompts=prompts, completions=["x"] * count, question_ids=[0] * count)


def test_bad_layouts_are_refused_with_a_clear_error(tmp_path):
    from lld_probe.probes import ProbeRecorder, ProbeSettings
    recorder = ProbeRecorder(ProbeSettings(), tmp_path / "a", temperature=1.0, pad_id=0, comm=_DisagreeingProcesses())
    with pytest.raises(ValueError, match="disagree on the group layout: rows per process \\[12, 13\\]"):
        _begin(recorder, 12, ["p"] * 12)
    single = ProbeRecorder(ProbeSettings(), tmp_path / "b", temperature=1.0, pad_id=0)
    with pytest.raises(ValueError, match="rows of group 1 do not share one prompt"):
        _begin(single, 16, ["p"] * 8 + ["q"] * 7 + ["r"])
    with pytest.raises(ValueError, match="not whole groups of 8"):
        _begin(single, 12, ["p"] * 12)
    assert not any((tmp_path / "b").glob("responses/*"))


@pytest.mark.distributed
def test_two_processes_killed_mid_step_resume_and_evaluate(tmp_path):
    import shutil
    import warnings
    from lld_probe.analysis import load
    out = tmp_path / "resume"
    _torchrun(tmp_path, out, 3, "random", "--save-steps", "1", "--eval-every", "1", "--eval-questions", "4")
    # as if killed while writing step 2: its last checkpoint is step 1 and rank 1's shard of step 2 is missing
    shutil.rmtree(out / "checkpoint-2")
    (out / "responses" / "step=000002.rank=00001.parquet").unlink()
    with pytest.warns(UserWarning, match="step 2 has 1 of 2 rank shards"):
        assert sorted(load(out).responses["step"].unique()) == [1]
    _torchrun(tmp_path, out, 3, "random", "--save-steps", "1", "--eval-every", "1", "--eval-questions", "4",
              "--resume", "--steps", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # every step complete: no warning
        run = load(out)
    assert sorted(run.responses["step"].unique()) == [1, 2, 3] and len(run.responses) == 3 * 24
    assert run.meta["restarts"] == 1 and run.meta["world_size"] == 2
    assert not run.scalars.duplicated(["step", "name"]).any()
    assert sorted(run.scalar("eval/accuracy")["step"]) == [0, 1, 2, 3]


@pytest.mark.distributed
def test_two_processes_record_both_generation_batches_of_a_step(tmp_path):
    """gradient_accumulation_steps=2, steps_per_generation=1: two generation batches per optimizer step (each with a
    group split across the processes), both finished by that step and written under it, groups numbered on."""
    from lld_probe.analysis import load
    out = tmp_path / "two-batches"
    _torchrun(tmp_path, out, 3, "nthr", "--trl", "gradient_accumulation_steps=2")
    run = load(out)
    assert len(run.responses) == 2 * 2 * 3 * 8 and (run.responses["window_steps"] == 1).all()
    assert run.meta["delta_spans_optimizer_steps"] == 1
    for step, frame in run.responses.groupby("step"):
        assert sorted(frame["group_id"].unique()) == [f"{step}:{index}" for index in range(6)]
        for _, indices in frame.groupby("group_id")["response_index"]:      # whole groups, once each
            assert sorted(indices) == list(range(8))
        assert run.scalar("lld/rate").set_index("step")["value"][step] == pytest.approx(_pooled_rate(frame))
    assert (run.scalar("lld/nthr_exchange_bytes")["value"] > 0).all()
