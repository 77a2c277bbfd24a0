"""Unit tests of the recorder's parts on synthetic tensors (no model): the row layout over processes, the
probe-set draw, the step metrics, the method weighting and the store's row builders. Expected values are
written out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from lld_probe.probes import OldPolicyScores, ProbeRecorder, ProbeSettings, ProbedBatch, RowLayout, SingleProcess
from lld_probe.probes.metrics import step_metrics
from lld_probe.probes.probe_set import draw_probe_set
from lld_probe.probes.rows import response_rows, token_rows
from lld_probe.probes.weighting import method_weighting
from lld_probe.store.schema import RESPONSE_COLUMNS, TOKEN_COLUMNS


def test_row_layout_splits_groups_at_process_boundaries():
    # 3 processes x 12 rows, G = 8: groups 0..3 + a half; group 1 straddles ranks 0-1, group 2 ranks 1-2
    middle = RowLayout(rank=1, world_size=3, local_rows=12, group_size=8)
    assert middle.offset == 12 and middle.splits_groups and middle.global_rows() == slice(12, 24)
    parts = [(p.group, p.local, p.first_index, p.whole) for p in middle.groups()]
    assert parts == [(1, slice(0, 4), 4, False), (2, slice(4, 12), 0, True)]
    assert middle.ranks_of_group(1) == (0, 1) and middle.ranks_of_group(2) == (1,)
    whole = RowLayout(rank=0, world_size=2, local_rows=16, group_size=8)
    assert not whole.splits_groups and [p.whole for p in whole.groups()] == [True, True]


def _candidate(row, group, correct, completion):
    return {"row": row, "group": group, "correct": correct, "question_id": f"q{group}", "prompt_ids": [group],
            "completion_ids": completion, "logp_before": -float(row)}


def test_probe_set_draw_takes_half_correct_half_near_misses_round_robin_over_mixed_groups():
    candidates = [
        _candidate(0, 0, True, [1]), _candidate(1, 0, False, [2]), _candidate(2, 0, False, [3]),
        _candidate(3, 1, True, [4]), _candidate(4, 1, True, [5]), _candidate(5, 1, True, [6]),   # not mixed
        _candidate(6, 2, True, [7]), _candidate(7, 2, True, [7]), _candidate(8, 2, False, [8]),  # a duplicate
    ]
    items = draw_probe_set(candidates, size=4, group_size=3)
    assert [(it["kind"], it["row"]) for it in items] == [("correct", 0), ("correct", 6), ("near_miss", 1),
                                                         ("near_miss", 8)]
    assert [it["probe_id"] for it in items] == [0, 1, 2, 3]
    # more than the distinct correct responses: near misses fill the rest; the duplicate is taken once
    items = draw_probe_set(candidates, size=6, group_size=3)
    assert sorted(it["row"] for it in items) == [0, 1, 2, 6, 8]
    assert draw_probe_set([c for c in candidates if c["group"] == 1], size=4, group_size=3) == []


def _probed(method="nthr", eta="0.5", truncated=(False,) * 4, correct=(True, False, False, False), rescored=None):
    """One group of 4 responses with hand-made old-policy scores: NTHR selects tokens 0 of responses 1 and 2."""
    settings = ProbeSettings(method=method, nthr_eta=eta, probe_set_size=0)
    recorder = ProbeRecorder(settings, _tmp(), temperature=1.0, pad_id=0)
    lengths = [2, 3, 2, 1]
    completions = [[] if cut else list(range(10, 10 + n)) for n, cut in zip(lengths, truncated)]
    rewards = torch.tensor([1.0 if c else 0.0 for c in correct])
    generation = recorder.begin_batch(7, [[1, 2]] * 4, completions, rewards=rewards, deciding_rewards=rewards,
                                      advantages=torch.tensor([1.5, -0.5, -0.5, -0.5]), group_size=4,
                                      prompts=["p"] * 4, completions=["a", "b", "c", "d"],
                                      question_ids=["q"] * 4, truncated=list(truncated))
    if rescored is not None:
        generation = type(generation)(**{**generation.__dict__, "rescored": torch.tensor(rescored)})
    mask = generation.batch.mask
    selected = torch.zeros_like(mask)
    selected[1, 0] = selected[2, 0] = True
    selected &= mask
    old = OldPolicyScores(token_logps=torch.full(mask.shape, -0.5) * mask, logp_before=(-0.5 * mask.sum(1)).where(
        mask.any(1), torch.tensor(math.nan)), entropy=torch.zeros(mask.shape), scores=selected.float(),
        nthr_selected=selected, taus={0: 0.5})
    loss_advantages, scaled = method_weighting(generation, old, settings, SingleProcess())
    return ProbedBatch(generation, old, loss_advantages, scaled)


_TMP = []


def _tmp():
    import tempfile
    _TMP.append(tempfile.TemporaryDirectory())
    return _TMP[-1].name


def test_method_weighting_scales_only_selected_incorrect_tokens():
    probed = _probed("nthr", "0.5")
    expected = torch.tensor([[1.5, 1.5, 0.0], [-0.25, -0.5, -0.5], [-0.25, -0.5, 0.0], [-0.5, 0.0, 0.0]])
    assert torch.equal(probed.loss_advantages, expected)
    assert torch.equal(probed.scaled, probed.old.nthr_selected)
    pos_only = _probed("pos_only")
    assert torch.equal(pos_only.loss_advantages, torch.tensor([1.5, 0.0, 0.0, 0.0]))
    assert not pos_only.scaled.any()
    random = _probed("random")
    assert torch.equal(random.scaled.sum(1), torch.tensor([0, 1, 1, 0]))      # NTHR's count per response
    assert not (random.scaled & ~random.generation.batch.mask).any()


def test_step_metrics_average_the_scaled_share_over_measured_incorrect_responses_only():
    # response 2 (incorrect) is truncated: no measured tokens, it enters no statistic
    probed = _probed("nthr", truncated=(False, False, True, False))
    delta = torch.tensor([-0.1, 0.2, math.nan, -0.3], dtype=torch.float64)
    metrics = step_metrics(probed, delta, SingleProcess())
    assert metrics["lld/rate"] == 1.0 and metrics["lld/delta_correct"] == pytest.approx(-0.1)
    assert metrics["lld/delta_incorrect"] == pytest.approx((0.2 - 0.3) / 2)
    # scaled shares of the measured incorrect responses: 1/3 (response 1) and 0/1 (response 3)
    assert metrics["lld/scaled_fraction"] == pytest.approx((1 / 3 + 0) / 2)
    assert metrics["lld/left_out"] == 1.0 and metrics["lld/tau"] == 0.5
    assert metrics["lld/mean_length"] == pytest.approx((2 + 3 + 1) / 3)


def test_row_builders_follow_the_schema_and_the_layout():
    probed = _probed("nthr", rescored=[True, False, True, True])
    logp_after = torch.tensor([-0.9, math.nan, -0.8, -0.4], dtype=torch.float64)
    responses = response_rows(probed, logp_after)
    assert list(responses.columns) == RESPONSE_COLUMNS
    assert responses["group_id"].tolist() == ["7:0"] * 4 and responses["response_index"].tolist() == [0, 1, 2, 3]
    assert responses["logp_before"].tolist() == [-1.0, -1.5, -1.0, -0.5]
    assert responses["scaled_fraction"].tolist() == pytest.approx([0, 1 / 3, 1 / 2, 0])
    tokens = token_rows(probed, torch.full(probed.generation.batch.mask.shape, -0.25))
    assert list(tokens.columns) == TOKEN_COLUMNS
    # only the re-scored responses (0, 2, 3), one row per measured token, in position order
    assert tokens[["response_index", "position"]].values.tolist() == [[0, 0], [0, 1], [2, 0], [2, 1], [3, 0]]
    assert tokens["token_id"].tolist() == [10, 11, 10, 11, 10]
    assert tokens["scaled"].tolist() == [False, False, True, False, False]
    assert isinstance(tokens, pd.DataFrame)


class _TwoProcesses:
    """Stand-in for two processes: the other one sends `other` (its own per-process metric parts)."""
    rank, world_size, traffic = 0, 2, {}

    def __init__(self, other):
        self.other = other

    def all_gather_object(self, value, purpose="other"):
        return [value, self.other]


class _Capture:
    rank, world_size, traffic = 0, 2, {}

    def all_gather_object(self, value, purpose="other"):
        self.value = value
        return [value]


def test_sampler_gap_pools_every_measured_token_over_processes():
    from dataclasses import replace
    probed = _probed("nthr", truncated=(False, False, True, False))        # old log-probs -0.5 on every token
    delta = torch.tensor([-0.1, 0.2, math.nan, -0.3], dtype=torch.float64)
    mine = torch.tensor([[-0.4, -0.7, 0.0], [-0.5, math.nan, -1.5], [0.0, 0.0, 0.0], [-0.3, 0.0, 0.0]])
    theirs = torch.tensor([[-0.5, -0.5, 0.0], [-0.6, -0.5, -0.5], [0.0, 0.0, 0.0], [-0.5, 0.0, 0.0]])
    capture = _Capture()
    step_metrics(ProbedBatch(replace(probed.generation, sampler_token_logps=theirs, sampler_zeroed_tokens=3),
                             probed.old, probed.loss_advantages, probed.scaled), delta, capture)
    mine_probed = ProbedBatch(replace(probed.generation, sampler_token_logps=mine, sampler_zeroed_tokens=1),
                              probed.old, probed.loss_advantages, probed.scaled)
    metrics = step_metrics(mine_probed, delta, _TwoProcesses(capture.value))
    # measured tokens: rows 0 (2), 1 (3, one without a sampler log-prob), 3 (1); truncated row 2 has none
    mine_gaps = [0.1, 0.2, 0.0, 1.0, 0.2]
    theirs_gaps = [0.0, 0.0, 0.1, 0.0, 0.0, 0.0]
    assert metrics["lld/sampler_gap_mean"] == pytest.approx(sum(mine_gaps + theirs_gaps) / 11, abs=1e-6)
    assert metrics["lld/sampler_gap_max"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["lld/sampler_zeroed_tokens"] == 4.0
