"""A run whose completions come from a separate sampler (TRL's use_vllm), with a stand-in that fills TRL's
vLLM fields the way TRL 1.16 does: sampling_per_token_logps, and importance_sampling_ratio =
exp(log pi_old - log pi_sampler) set to 0 above vllm_importance_sampling_clip_max (the *_mask modes).
Responses the ratio masks out wholly are left out of the LLD statistics like truncated ones; the
sampler/old-policy gap is reported per measured token, checked against the stand-in's own shifts."""

from __future__ import annotations

import math

import pytest
import torch
from trl import GRPOTrainer

from lld_probe.integrations.trl.adapter import LikelihoodProbeMixin
from lld_probe.integrations.trl.run import make_trainer
from lld_probe.store.run_store import read_run_store
from test_trainer import _settings

CLIP_MAX = 3.0      # TRL's default vllm_importance_sampling_clip_max
FAR = 2.0           # a shift whose ratio exp(2) = 7.4 > CLIP_MAX: masked


class VLLMStandIn(GRPOTrainer):
    """GRPOTrainer whose generation output carries what TRL adds under use_vllm with
    vllm_importance_sampling_correction (mode self.is_mode): the sampler's log-probs are the old policy's
    plus known shifts (small everywhere, FAR on chosen tokens), and the ratio is masked as TRL masks it."""
    is_mode = "sequence_mask"

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        ids, mask = output["completion_ids"], output["completion_mask"]
        with torch.no_grad():        # TRL's old_per_token_logps: the trainer's own forward
            old, *_ = self._get_per_token_logps_and_entropies(
                self.model, torch.cat([output["prompt_ids"], ids], 1),
                torch.cat([output["prompt_mask"], mask], 1), ids.shape[1])
        generator = torch.Generator().manual_seed(11)
        shift = (torch.rand(ids.shape, generator=generator) - 0.5) * 0.02       # |shift| <= 0.01
        long_rows = (mask.sum(1) >= 3).nonzero().flatten().tolist()
        self.whole_masked, self.zeroed = [long_rows[0]], 0
        shift[long_rows[0], 1] = -FAR                     # sequence_mask: the whole response; token_mask: 1 token
        if self.is_mode == "token_mask":
            shift[long_rows[1]] = -FAR                    # every token: the whole response
            self.whole_masked, self.zeroed = [long_rows[1]], 1
        shift = shift * mask
        sampler = old + shift
        difference = (old - sampler) * mask                # TRL: (old_per_token_logps - sampling_per_token_logps) * mask
        if self.is_mode == "sequence_mask":
            difference = difference.sum(-1, keepdim=True)
        ratio = torch.exp(difference)
        ratio = ratio.masked_fill(ratio > CLIP_MAX, 0.0)
        output.update(old_per_token_logps=old, sampling_per_token_logps=sampler, importance_sampling_ratio=ratio)
        self.shift, self.mask = shift, mask.bool()
        return output


class ProbedStandIn(LikelihoodProbeMixin, VLLMStandIn):
    pass


@pytest.mark.parametrize("mode", ["sequence_mask", "token_mask"])
def test_masked_responses_are_left_out_and_the_sampler_gap_is_reported(tmp_path, mode):
    trainer, settings = make_trainer(_settings(tmp_path, "nthr", steps=1, probe_set_size=0))
    trainer.__class__ = ProbedStandIn
    trainer.is_mode = mode
    trainer.train()
    metrics = trainer.recorder.last.metrics
    responses = read_run_store(settings.out).responses
    # one process: a response's row in the generation batch from its group's index and its place in it
    responses.index = [int(g.split(":")[1]) * 8 + i for g, i in zip(responses["group_id"], responses["response_index"])]
    for row in trainer.whole_masked:
        assert bool(responses.loc[row, "sampler_masked"]) and responses.loc[row, "n_tokens"] == 0
        assert not responses.loc[row, "truncated"]          # told apart from a cut at the length limit
        assert math.isnan(responses.loc[row, "logp_before"])
    empty = int((trainer.mask.sum(1) == 0).sum())
    assert metrics["lld/left_out"] == len(trainer.whole_masked) + empty
    # independent: the gap is the stand-in's shift on every token of the responses kept
    kept = trainer.mask.clone()
    kept[trainer.whole_masked] = False
    gaps = trainer.shift.double().abs()[kept]
    assert metrics["lld/sampler_gap_mean"] == pytest.approx(float(gaps.mean()), abs=1e-5)
    assert metrics["lld/sampler_gap_max"] == pytest.approx(float(gaps.max()), abs=1e-5)
    assert metrics["lld/sampler_zeroed_tokens"] == trainer.zeroed
    assert (metrics["lld/sampler_gap_max"] == pytest.approx(FAR, abs=1e-5)) == (mode == "token_mask")


def test_a_run_without_a_sampler_reports_no_gap(tmp_path):
    trainer, _ = make_trainer(_settings(tmp_path, "grpo", steps=1, probe_set_size=0))
    trainer.train()
    assert not any(name.startswith("lld/sampler_") for name in trainer.recorder.last.metrics)
