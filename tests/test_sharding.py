"""Sharded models: the probes on FSDP2 (torch's fully_shard on 2 gloo processes) equal one process with the
whole model; forwards in lockstep (lld_probe.scoring.lockstep); the output embedding gathered from
DeepSpeed ZeRO-3 (a stand-in parameter, and a pin of DeepSpeed's API where it is installed); FSDP1 refused."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from sharded_workers import build_model, probed_step, rows_of, sharded_worker  # noqa: E402


def _tokens_by_row(batch, model):
    """Independent reference: each row's full sequence through the model; the logits at position t-1 give
    the log-prob of token t (float64 log-softmax)."""
    out = torch.zeros(batch.mask.shape, dtype=torch.float64)
    with torch.no_grad():
        for row in range(batch.size):
            start, length = int(batch.prompt_lengths[row]), int(batch.mask[row].sum())
            ids = batch.input_ids[row, : start + length][None]
            logits = model(input_ids=ids).logits[0].double()
            logps = logits.log_softmax(-1)
            for j in range(length):
                out[row, j] = logps[start + j - 1, batch.tokens[row, j]]
    return out


class _OtherProcess:
    """comm of rank 0 of two, the other process needing `forwards` forwards and able to pack or not."""
    rank, world_size = 0, 2

    def __init__(self, forwards: int, packs: bool = True):
        self.forwards, self.packs, self.calls = forwards, packs, []

    def all_reduce(self, tensor, op="sum", purpose="other", ranks=None):
        self.calls.append(op)
        other = self.forwards if op == "max" else int(self.packs)
        return torch.maximum(tensor, torch.tensor([other])) if op == "max" else torch.minimum(tensor, torch.tensor([other]))


def _small_batch():
    from lld_probe.scoring import build_group_batch
    prompts = [[5, 6, 7, 8]] * 3 + [[9, 10, 11]] * 2
    completions = [[12, 13, 14], [15, 16], [17, 18, 19, 20, 21], [22, 23], [24, 25, 26]]
    return build_group_batch(prompts, completions, pad_id=0)


def _counting(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("packs", [True, False])
def test_lockstep_runs_the_agreed_number_of_forwards_with_exact_scores(packs):
    from lld_probe.scoring.lockstep import score_in_lockstep
    from lld_probe.scoring.packing import plan_chunks
    model = build_model({"model": "random"})
    batch = _small_batch()
    own = len(plan_chunks(batch, 12))
    assert own >= 2
    comm = _OtherProcess(forwards=own + 3, packs=packs)
    calls, handle = _counting(model)
    scored = score_in_lockstep(model, batch, comm, with_hidden=True, with_entropy=True, max_tokens=12)
    handle.remove()
    # the packing check (2 forwards, only where every process can pack), then as many as the other process
    assert len(calls) == (2 if packs else 0) + own + 3
    reference = _tokens_by_row(batch, model)
    assert torch.allclose(scored.token_logps.double(), reference, atol=1e-5)
    assert scored.hidden.shape == (*batch.mask.shape, model.config.hidden_size)
    # a second call: the check's verdict is kept, no more check forwards
    calls, handle = _counting(model)
    score_in_lockstep(model, batch, _OtherProcess(forwards=1, packs=packs), max_tokens=12)
    handle.remove()
    assert len(calls) == own


def test_lockstep_with_no_rows_joins_the_others_forwards():
    from lld_probe.scoring.lockstep import score_in_lockstep
    model = build_model({"model": "random"})
    model.train()
    calls, handle = _counting(model)
    assert score_in_lockstep(model, None, _OtherProcess(forwards=4)) is None
    handle.remove()
    assert len(calls) == 2 + 4 and model.training      # the check on a fixed sample, 4 idle forwards, mode kept


def test_lockstep_hidden_states_are_the_states_before_the_output_layer():
    from lld_probe.scoring.lockstep import score_in_lockstep
    model = build_model({"model": "random"})
    batch = _small_batch()
    scored = score_in_lockstep(model, batch, _OtherProcess(forwards=1), with_hidden=True, max_tokens=12)
    head = model.get_output_embeddings().weight.detach().double()
    logps = (scored.hidden.double() @ head.T).log_softmax(-1).gather(-1, batch.tokens[..., None])[..., 0]
    assert torch.allclose(logps * batch.mask, _tokens_by_row(batch, model) * batch.mask, atol=1e-5)


def _reference(case, tmp_path):
    """The same step on one process with the whole model."""
    from lld_probe.probes import ProbeRecorder, ProbeSettings
    model = build_model(case)
    parts = [rows_of(case, rank) for rank in range(2)]
    prompts, completions, truncated = (sum((part[i] for part in parts), []) for i in range(3))
    settings = ProbeSettings(method="nthr", probe_score_max_tokens=case["max_tokens"], probe_set_size=4,
                             probe_every=1, probe_response_fraction=case.get("fraction", 1.0), seed=case["seed"])
    recorder = ProbeRecorder(settings, tmp_path / "reference", temperature=1.0, pad_id=0)
    recorder.begin_run({})
    result = probed_step(model, recorder, prompts, completions, truncated, parts[0][3], 0)
    return result, recorder.probe_items


CASES = {
    # tied embeddings in the root unit; rank 1's longer rows need more packed forwards than rank 0's
    "tiny_unequal_chunks": {"model": "tiny", "max_tokens": 24, "seed": 0},
    # lm_head its own unit (a DTensor outside its forward); rank 1 re-scores nothing (its re-scored rows are
    # truncated), rank 0 re-scores some
    "lm_head_unit_empty_rescored_set": {"model": "random", "lm_head_unit": True, "max_tokens": 24, "seed": 3,
                                        "fraction": 0.5},
}


def _rescored_pattern(seed, fraction):
    import numpy as np
    return (np.random.default_rng(seed).random(8) < fraction).nonzero()[0].tolist()


@pytest.mark.distributed
@pytest.mark.parametrize("name", list(CASES))
def test_fsdp2_on_two_processes_equals_one_process(tmp_path, name):
    from lld_probe.scoring import build_group_batch
    from lld_probe.scoring.packing import plan_chunks
    case = dict(CASES[name])
    if "fraction" in case:
        case["truncate_rows"] = _rescored_pattern(case["seed"], case["fraction"])
        assert 0 < len(case["truncate_rows"]) < 8
    mp.spawn(sharded_worker, args=(2, str(tmp_path / "rendezvous"), case, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    chunks = [len(plan_chunks(build_group_batch(*rows_of(case, r)[:2], pad_id=0), case["max_tokens"])) for r in range(2)]
    assert chunks[0] < chunks[1]            # the processes need different numbers of packed forwards
    assert [r["sharding"] for r in ranks] == ["fsdp2", "fsdp2"]
    assert ranks[0]["forwards"] == ranks[1]["forwards"]
    reference, reference_items = _reference(case, tmp_path)
    key = ["group_id", "response_index"]
    sharded = pd.concat([r["responses"] for r in ranks]).sort_values(key).reset_index(drop=True)
    whole = reference["responses"].sort_values(key).reset_index(drop=True)
    assert len(sharded) == 16 and list(sharded[key].itertuples(index=False)) == list(whole[key].itertuples(index=False))
    measured = whole["n_tokens"] > 0
    assert sharded["logp_before"][measured].to_numpy() == pytest.approx(whole["logp_before"][measured].to_numpy(),
                                                                       abs=1e-4)
    both = sharded["logp_after"].notna() & whole["logp_after"].notna()
    assert both.sum() > 0
    assert sharded["logp_after"][both].to_numpy() == pytest.approx(whole["logp_after"][both].to_numpy(), abs=1e-4)
    assert (sharded["logp_after"] != sharded["logp_before"])[both].all()       # the change was measured
    assert sharded["nthr_selected_fraction"].tolist() == whole["nthr_selected_fraction"].tolist()
    assert sharded["nthr_selected_fraction"].sum() > 0
    tokens = pd.concat([r["tokens"] for r in ranks if r["tokens"] is not None])
    merged = tokens.merge(reference["tokens"], on=key + ["position"], suffixes=("", "_whole"))
    assert len(merged) == len(tokens) > 0
    assert (merged["nthr_selected"] == merged["nthr_selected_whole"]).all()
    assert merged["nthr_score"].to_numpy() == pytest.approx(merged["nthr_score_whole"].to_numpy(), abs=1e-4)
    assert merged["logp_after"].to_numpy() == pytest.approx(merged["logp_after_whole"].to_numpy(), abs=1e-4)
    if "fraction" in case:
        assert ranks[1]["tokens"] is None or ranks[1]["tokens"].empty     # rank 1 re-scored nothing and still
        assert ranks[0]["tokens"] is not None and not ranks[0]["tokens"].empty    # joined rank 0's forwards
    items = ranks[0]["probe_items"]
    assert items and [i["logp_before"] for i in items] == pytest.approx([i["logp_before"] for i in reference_items],
                                                                        abs=1e-4)
    if name == "tiny_unequal_chunks":
        assert ranks[0]["fsdp1_refusal"] == ranks[1]["fsdp1_refusal"] and "FSDP1" in ranks[0]["fsdp1_refusal"]


# --- DeepSpeed ZeRO-3 -----------------------------------------------------------------------------------
class _Zero3Weight(torch.nn.Parameter):
    """A stand-in for a ZeRO-3 parameter: partitioned to shape (0,) outside a gather, with ds_id/ds_status."""


def _zero3_stand_in(model, monkeypatch):
    """Partition lm_head's weight as ZeRO-3 does outside a forward; a fake `deepspeed` whose
    zero.GatheredParameters fills it in for the block and partitions it again after."""
    head = model.get_output_embeddings()
    full = head.weight.detach().clone()
    weight = _Zero3Weight(torch.empty(0), requires_grad=True)
    weight.ds_id, weight.ds_status, weight.ds_shape = 7, "NOT_AVAILABLE", full.shape
    head.weight = weight
    calls = []

    class GatheredParameters:
        def __init__(self, params, modifier_rank=None, fwd_module=None, enabled=True):
            calls.append((list(params), modifier_rank))
            self.params = params

        def __enter__(self):
            for p in self.params:
                p.data, p.ds_status = full.clone(), "AVAILABLE"

        def __exit__(self, *exc):
            for p in self.params:
                p.data, p.ds_status = torch.empty(0), "NOT_AVAILABLE"

    fake = types.ModuleType("deepspeed")
    fake.zero = types.SimpleNamespace(GatheredParameters=GatheredParameters)
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    return weight, full, calls


def test_zero3_output_embedding_is_gathered_for_the_block(monkeypatch):
    from lld_probe.integrations.sharding import full_output_embedding, sharding_of
    model = build_model({"model": "random"})
    weight, full, calls = _zero3_stand_in(model, monkeypatch)
    assert sharding_of(model) == "zero3"
    with full_output_embedding(model) as unembed:
        assert torch.equal(unembed, full)
    assert calls == [([weight], None)]               # read-only gather (modifier_rank=None) of that one weight
    assert weight.shape == (0,)                      # partitioned again after the block


def test_zero3_nthr_with_the_gathered_embedding_equals_the_whole_model(monkeypatch, tmp_path):
    from lld_probe.core import nthr_token_scores
    from lld_probe.integrations.sharding import full_output_embedding
    from lld_probe.scoring import score_group
    model = build_model({"model": "random"})
    batch = _small_batch()
    scored = score_group(model, batch, with_hidden=True)
    correct = torch.tensor([True, False, True, True, False])
    whole = nthr_token_scores(scored.hidden, model.get_output_embeddings().weight.detach(), batch.tokens,
                              batch.mask, correct, token_logprobs=scored.token_logps)
    _zero3_stand_in(model, monkeypatch)
    with full_output_embedding(model) as unembed:
        gathered = nthr_token_scores(scored.hidden, unembed, batch.tokens, batch.mask, correct,
                                     token_logprobs=scored.token_logps)
    assert torch.equal(gathered.scores, whole.scores)


def test_deepspeed_api_the_gather_relies_on():
    deepspeed = pytest.importorskip("deepspeed", reason="deepspeed is not installed (the ZeRO-3 pin runs where it is)")
    import inspect
    parameters = inspect.signature(deepspeed.zero.GatheredParameters.__init__).parameters
    assert "params" in parameters and "modifier_rank" in parameters, \
        "deepspeed.zero.GatheredParameters(params, modifier_rank=None) changed: lld_probe/integrations/sharding.py"


def test_unsharded_models_keep_the_plain_weight():
    from lld_probe.integrations.sharding import full_output_embedding, refuse_unsupported_sharding
    model = build_model({"model": "random"})
    assert refuse_unsupported_sharding(model) is None
    with full_output_embedding(model) as unembed:
        assert unembed.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert not math.isnan(float(unembed.sum()))


# --- a TRL run with accelerate's FSDP2 -------------------------------------------------------------------
@pytest.mark.distributed
@pytest.mark.integration
def test_trl_run_on_fsdp2_stores_what_one_process_measures(tmp_path):
    """`lld-probe train` on 2 processes with accelerate's FSDP2 (forced on CPU by tests/fsdp_cpu_launch.py);
    small packed forwards, so the processes' rows need different numbers of them. The stored logp_before and
    NTHR selection of step 1 equal one process's scoring of the same rows at the initial model."""
    import os
    import subprocess

    from test_multiprocess import _rescore_first_step
    out = tmp_path / "fsdp2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_FSDP": "true",
           "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
           "FSDP_TRANSFORMER_CLS_TO_WRAP": "Qwen2DecoderLayer"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               str(Path(__file__).parent / "fsdp_cpu_launch.py"), "train", "--method", "nthr", "--model", "tiny",
               "--steps", "2", "--group-size", "8", "--prompts-per-step", "4", "--eval-every", "0",
               "--probe-every", "1", "--probe-score-max-tokens", "48", "--out", str(out)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run, checked = _rescore_first_step(out)
    assert run.meta["sharding"] == "fsdp2" and run.meta["world_size"] == 2 and checked == 4
    assert run.responses["logp_after"].notna().all()
    assert set(run.probe_set["step"]) == {0, 1, 2}


@pytest.mark.distributed
def test_zero3_on_two_cpu_processes_gathers_and_scores_in_lockstep(tmp_path):
    """Runs where deepspeed is installed (DeepSpeed's CPU accelerator, gloo)."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    from sharded_workers import zero3_worker
    mp.spawn(zero3_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    whole = build_model({"model": "random"})
    for rank in range(2):
        result = torch.load(tmp_path / f"zero3_rank{rank}.pt", weights_only=False)
        assert result["sharding"] == "zero3"
        assert torch.equal(result["weight"], whole.get_output_embeddings().weight.detach())
        batch = result["batch"]
        assert torch.allclose(result["token_logps"].double(), _tokens_by_row(batch, whole), atol=1e-5)
