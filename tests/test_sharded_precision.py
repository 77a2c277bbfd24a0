"""Precision on sharded models (FSDP2 on 2 gloo CPU processes): lockstep scoring in float32 under accelerate's
bf16 autocast wrapper, FSDP2 mixed precision (bf16 parameters) labelled, and lld/delta_resolution of bf16
weights measured in lockstep (the same on every process)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from sharded_workers import build_model, precision_worker  # noqa: E402
from test_sharding import _tokens_by_row  # noqa: E402

_TIMEOUT_S = 120       # a desynchronised forward hangs: fail instead


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded_precision")
    context = mp.spawn(precision_worker, args=(2, str(out / "rendezvous"), str(out)), nprocs=2, join=False)
    deadline = time.monotonic() + _TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the sharded processes did not finish within {_TIMEOUT_S} s (desynchronised forwards?)")
    return [torch.load(out / f"precision_rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.distributed
def test_lockstep_scoring_under_accelerate_autocast_is_float32(ranks):
    whole = build_model({"model": "random"})          # float32 weights, no autocast: the reference
    for result in ranks:
        reference = _tokens_by_row(result["batch"], whole)
        assert torch.allclose(result["autocast_logps"].double(), reference, atol=1e-5), \
            float((result["autocast_logps"].double() - reference).abs().max())
        assert result["autocast_wrapper_kept"]         # the training forward keeps its autocast


@pytest.mark.distributed
def test_fsdp2_mixed_precision_is_labelled_bf16_parameters(ranks):
    whole = build_model({"model": "random"})
    for result in ranks:
        assert result["mp_stored_dtype"] == torch.float32        # the shards hold float32 ...
        assert result["mp_label"] == "bfloat16 parameters (FSDP2 mixed precision)"
        assert result["mp_low_precision"]
        # ... and the forwards compute with bf16 parameters: the label is what the numbers are
        assert (result["mp_logps"].double() - _tokens_by_row(result["batch"], whole)).abs().max() > 1e-4


@pytest.mark.distributed
def test_delta_resolution_of_bf16_weights_is_measured_in_lockstep(ranks):
    values = [result["metrics"].get("lld/delta_resolution") for result in ranks]
    assert None not in values, [sorted(r["metrics"]) for r in ranks]
    assert values[0] == values[1] and values[0] > 0       # the max over processes, on every process


class _OtherProcess:
    """comm of rank 0 of two; the other process can pack (or not) and needs `forwards` forwards."""
    rank, world_size = 0, 2

    def __init__(self, forwards: int, packs: bool, resolution: float):
        self.forwards, self.packs, self.resolution = forwards, packs, resolution

    def all_reduce(self, tensor, op="sum", purpose="other", ranks=None):
        if tensor.is_floating_point():
            return torch.maximum(tensor, torch.tensor([self.resolution], dtype=tensor.dtype))
        other = self.forwards if op == "max" else int(self.packs)
        return (torch.maximum if op == "max" else torch.minimum)(tensor, torch.tensor([other]))


@pytest.mark.parametrize("packs", [True, False])
def test_resolution_in_lockstep_without_rows_joins_the_others_forwards(packs):
    from lld_probe.scoring.resolution import layout_resolution_in_lockstep
    model = build_model({"model": "random"}).to(torch.bfloat16)
    model.train()
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    value = layout_resolution_in_lockstep(model, None, _OtherProcess(forwards=5, packs=packs, resolution=0.25))
    handle.remove()
    assert value == 0.25 and model.training
    assert len(calls) == (2 if packs else 5)       # rows + packed, or the other's rows + each row alone
