"""Device discipline: a group's masks, ids and correctness are built on the CPU while the model's outputs live
on its device (a GPU). The core functions and the recorder must accept that mix and give the CPU numbers.
A CPU-only machine has no second device, so tests/elsewhere.py stands one in: an operation that mixes a
stand-in tensor with a plain CPU tensor raises, as CUDA does."""

import math

import pytest
import torch

from brute import random_group
from elsewhere import Elsewhere, elsewhere, elsewhere_device
from lld_probe.core import (first_order_logp_change, gwhes, method_token_advantages, nthr_threshold,
                            nthr_token_scores, positive_aggregate, scores_from_aggregate, select_above,
                            sequence_logprob, token_logprobs)
from lld_probe.core.interaction import interaction_scores


def _group(seed=0):
    hidden, unembed, tokens, mask, correct = random_group(seed, G=6, T=7, d=5, V=13, dtype=torch.float32)
    logits = torch.einsum("gtd,vd->gtv", hidden, unembed)
    logps = token_logprobs(logits, tokens, mask)
    return hidden, unembed, tokens, mask, correct, logits, logps


def test_the_stand_in_device_rejects_a_mix_as_cuda_does():
    with elsewhere_device():
        on_device = elsewhere(torch.ones(3))
        with pytest.raises(RuntimeError, match="same device"):
            on_device + torch.ones(3)
        moved = torch.ones(3).to(on_device.device)
        assert isinstance(on_device + moved, Elsewhere)
        assert not isinstance((on_device + moved).cpu(), Elsewhere)
        assert on_device[torch.tensor([0, 2])].shape == (2,)          # a CPU index is allowed
        assert isinstance(torch.zeros(2, device=on_device.device), Elsewhere)
        with pytest.raises(RuntimeError, match="same device"):
            torch.cat([on_device, torch.tensor([1.0])])
        with pytest.raises(RuntimeError, match="same device"):
            torch.stack([on_device.sum(), torch.tensor(1.0)])         # a 0-d CPU tensor is no scalar here
        assert float((on_device * torch.tensor(2.0)).sum()) == 6.0    # but it is one in elementwise ops
        with pytest.raises(TypeError, match="numpy"):
            on_device.numpy()
        assert on_device.to(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("vocab", ["full", "group"])
@pytest.mark.parametrize("anchor_self", [True, False])
def test_nthr_gwhes_and_prediction_take_cpu_masks_with_device_outputs(vocab, anchor_self):
    hidden, unembed, tokens, mask, correct, logits, logps = _group()
    advantages = torch.stack([torch.linspace(-1, 1, 6)[:, None].expand(6, 7).clone() * mask, mask.float()])

    def run(hidden, unembed, logits, logps):
        scores = nthr_token_scores(hidden, unembed, tokens, mask, correct, vocab=vocab, anchor_self=anchor_self,
                                   token_logprobs=logps)
        tau = nthr_threshold(scores.anchors, correct, 1.0)
        return (scores.scores, scores.anchors, tau, select_above(scores.scores, mask, correct, tau),
                gwhes(hidden, unembed, tokens, mask, correct, token_logprobs=logps),
                first_order_logp_change(hidden, unembed, tokens, mask, advantages, lr=0.1, token_logprobs=logps),
                token_logprobs(logits, tokens, mask), sequence_logprob(logps, mask))

    expected = run(hidden, unembed, logits, logps)
    with elsewhere_device():
        got = run(elsewhere(hidden), elsewhere(unembed), elsewhere(logits), elsewhere(logps))
        assert all(isinstance(value, Elsewhere) for value in got if isinstance(value, torch.Tensor))
        got = [value.cpu() if isinstance(value, torch.Tensor) else value for value in got]
    for want, have in zip(expected, got):
        if isinstance(want, float):
            assert have == want or (math.isnan(want) and math.isnan(have))
        else:
            torch.testing.assert_close(have, want, rtol=0, atol=0, equal_nan=True)


def test_split_group_parts_and_the_interaction_kernel_take_cpu_masks():
    hidden, unembed, tokens, mask, correct, _, logps = _group(1)
    columns = torch.unique(tokens[mask])

    def run(hidden, unembed, logps, columns):
        aggregate = positive_aggregate(hidden, unembed, tokens, mask, correct, columns=columns, token_logprobs=logps)
        scores = scores_from_aggregate(aggregate, hidden, unembed, tokens, mask, columns=columns, token_logprobs=logps)
        own = interaction_scores(hidden, unembed, tokens, mask, mask.float(), columns=columns, token_logprobs=logps)
        return aggregate, scores, own

    expected = run(hidden, unembed, logps, columns)
    with elsewhere_device():
        got = [value.cpu() for value in run(elsewhere(hidden), elsewhere(unembed), elsewhere(logps), elsewhere(columns))]
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["grpo", "pos_only", "nthr", "random"])
def test_method_advantages_on_the_device_of_the_advantages(method):
    _, _, _, mask, correct, _, _ = _group(2)
    selected = mask & ~correct[:, None] & (torch.arange(7)[None, :] % 2 == 0)
    advantages = torch.where(correct, 1.0, -1.0)
    expected = method_token_advantages(method, advantages, mask, correct, selected, 0.0, seed=3)
    with elsewhere_device():
        per_token, scaled = method_token_advantages(method, elsewhere(advantages), mask, correct, elsewhere(selected),
                                                     0.0, seed=3)
        assert isinstance(per_token, Elsewhere) and isinstance(scaled, Elsewhere)
        got = per_token.cpu(), scaled.cpu()
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=0, atol=0)


def test_the_recorder_scores_device_outputs_of_a_cpu_batch(tmp_path):
    """The TRL path: the recorder builds its batch on the CPU, the trainer hands it the old policy's
    log-probs, entropy and hidden states on the model's device."""
    from lld_probe.probes import ProbeRecorder, ProbeSettings
    hidden, unembed, tokens, mask, correct, _, logps = _group(3)
    completions = [tokens[row][mask[row]].tolist() for row in range(6)]
    rewards = correct.float()

    def probed(folder, on_device):
        recorder = ProbeRecorder(ProbeSettings(method="nthr", nthr_eta="zero", probe_set_size=0), folder,
                                 temperature=1.0, pad_id=0)
        generation = recorder.begin_batch(1, [[1, 2]] * 6, completions, rewards=rewards, deciding_rewards=rewards,
                                          advantages=torch.where(correct, 1.0, -1.0), group_size=6,
                                          prompts=["q"] * 6, completions=["c"] * 6, question_ids=["q"] * 6)
        entropy = torch.ones_like(logps)
        values = [on_device(value) for value in (logps, entropy, hidden, unembed)]
        result = recorder.score_old_policy(generation, *values)
        return result.old.scores, result.old.nthr_selected, result.old.logp_before, result.loss_advantages

    expected = probed(tmp_path / "cpu", lambda value: value)
    with elsewhere_device():
        got = probed(tmp_path / "device", elsewhere)
        assert not any(isinstance(value, Elsewhere) for value in got)        # the recorder keeps CPU records
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=0, atol=0, equal_nan=True)


class _ModelOnDevice:
    """What the protocol's diagnostics read from a model: its output embedding (here on the stand-in)."""

    def __init__(self, unembed):
        self.weight = unembed

    def get_output_embeddings(self):
        return self


def test_the_protocols_diagnostics_run_on_the_device_and_return_cpu_records():
    from lld_probe.protocol import ProtocolConfig
    from lld_probe.protocol.question import diagnose
    from lld_probe.scoring import ScoredGroup
    from lld_probe.scoring.batch import GroupBatch
    hidden, unembed, tokens, mask, correct, _, logps = _group(4)
    batch = GroupBatch(torch.ones(6, 9, dtype=torch.long), torch.ones(6, 9, dtype=torch.long),
                       torch.full((6,), 2), tokens, mask)
    old = ScoredGroup(logps, hidden, torch.ones_like(logps))              # merge_scores keeps `old` on the CPU
    config = ProtocolConfig(group_size=6).resolved()
    expected = diagnose(_ModelOnDevice(unembed), old, batch, correct, config)
    with elsewhere_device():
        got = diagnose(_ModelOnDevice(elsewhere(unembed)), old, batch, correct, config)
        fields = [got.logp_before, got.advantages, got.scores.scores, got.scores.anchors, got.selected, got.gwhes]
        assert not any(isinstance(value, Elsewhere) for value in fields)
    want = [expected.logp_before, expected.advantages, expected.scores.scores, expected.scores.anchors,
            expected.selected, expected.gwhes]
    for have, wanted in zip(fields, want):
        torch.testing.assert_close(have, wanted, rtol=0, atol=0, equal_nan=True)
    assert got.tau == expected.tau
