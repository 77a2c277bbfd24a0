"""The NTHR, GWHES and first-order scores recompute pi from the final hidden states h, the output embedding W
and the logit transform f. A model whose log-probs are not log softmax(f(W h) / T) (a transform its config
does not name, an adapter on the output layer, hidden states captured elsewhere) is refused with one line
before any score is computed, instead of giving silently wrong scores."""

from __future__ import annotations

import tempfile

import pytest
import torch

from lld_probe.core import LogitTransform
from lld_probe.core.logit_check import logprob_recomputation_error
from lld_probe.models import load_model
from lld_probe.probes import ProbeRecorder, ProbeSettings
from lld_probe.scoring import output_embedding_weight, score_group


def _float64_logprobs(hidden, unembed, tokens, temperature, transform):
    """Independent float64 reference: log softmax(f(W h) / T) at the sampled token, full vocabulary."""
    logits = transform.logits(hidden.double() @ unembed.double().T) / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None])[..., 0]


def test_recomputation_error_is_rounding_when_consistent_and_large_when_not():
    torch.manual_seed(0)
    hidden, unembed = torch.randn(3, 5, 8, dtype=torch.float64), 3 * torch.randn(40, 8, dtype=torch.float64)
    tokens, mask = torch.randint(0, 40, (3, 5)), torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False
    capped = LogitTransform(softcap=4.0)
    logps = _float64_logprobs(hidden, unembed, tokens, 0.7, capped)
    assert logprob_recomputation_error(hidden, unembed, tokens, mask, logps, temperature=0.7,
                                       transform=capped, positions=100) < 1e-12
    # the transform not followed, or the log-probs of the next position (hidden at t predicts token t): far off
    assert logprob_recomputation_error(hidden, unembed, tokens, mask, logps, temperature=0.7, positions=100) > 0.5
    shifted = torch.roll(logps, 1, dims=1)
    assert logprob_recomputation_error(hidden, unembed, tokens, mask, shifted, temperature=0.7,
                                       transform=capped, positions=100) > 0.5
    # tokens off the mask are never read, and an empty mask has nothing to check
    garbage = logps.masked_fill(~mask, 1e6)
    assert logprob_recomputation_error(hidden, unembed, tokens, mask, garbage, temperature=0.7, transform=capped,
                                       positions=100) < 1e-12
    assert logprob_recomputation_error(hidden, unembed, tokens, torch.zeros_like(mask), garbage) == 0.0


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_model("tiny")
    return model.eval()


def _probe_one_group(model, store, logit_transform=None):
    recorder = ProbeRecorder(ProbeSettings(method="nthr", probe_set_size=0), store, temperature=1.0, pad_id=0)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    generation = recorder.begin_batch(1, [[5, 6, 7]] * 4, [[8, 9, 10], [11, 12], [13, 14, 15, 16], [17]],
                                      rewards=rewards, deciding_rewards=rewards,
                                      advantages=torch.tensor([1.0, -1.0, 1.0, -1.0]), group_size=4,
                                      prompts=["p"] * 4, completions=list("abcd"), question_ids=["q"] * 4)
    scored = score_group(model, generation.batch, with_hidden=True, with_entropy=True)
    return recorder.score_old_policy(generation, scored.token_logps, scored.entropy, scored.hidden,
                                     output_embedding_weight(model), logit_transform)


def test_a_head_transform_the_config_does_not_name_is_refused_before_scoring(tiny):
    with tempfile.TemporaryDirectory() as store:
        assert _probe_one_group(tiny, store).old.scores.abs().sum() > 0        # the plain head passes
    # logits = 3 W h, with nothing in the config saying so (as an unread config entry or a wrapped head would)
    handle = tiny.get_output_embeddings().register_forward_hook(lambda module, args, output: 3 * output)
    try:
        with tempfile.TemporaryDirectory() as store, pytest.raises(ValueError) as refused:
            _probe_one_group(tiny, store)
    finally:
        handle.remove()
    message = str(refused.value)
    assert "\n" not in message and "logit transform read from its config (identity)" in message
    assert "not supported" in message


def test_bf16_weights_pass_the_check_at_their_own_precision(tiny):
    model = load_model("tiny")[0].to(torch.bfloat16).eval()
    with tempfile.TemporaryDirectory() as store:
        assert torch.isfinite(_probe_one_group(model, store).old.scores).all()


@pytest.mark.integration
def test_the_trainer_refuses_such_a_head_at_its_first_batch_and_keeps_the_store(tmp_path, monkeypatch):
    """A soft-capped Gemma-2 whose cap the reader does not see (as for a head it does not know): TRL trains on
    the capped logits, the probes' NTHR would assume W h, and the run stops at its first batch."""
    from test_model_forms import tiny_softcapped_gemma

    import lld_probe.integrations.trl.adapter as adapter
    from lld_probe.integrations.trl import LLDConfig, LLDGRPOTrainer
    from lld_probe.integrations.trl.run import build_dataset
    from lld_probe.tasks import get_task
    _, tokenizer = load_model("tiny")
    model = tiny_softcapped_gemma(tokenizer)
    monkeypatch.setattr(adapter, "logit_transform_of", lambda model: LogitTransform())
    task = get_task("arithmetic")
    args = LLDConfig(output_dir=str(tmp_path / "run"), method="nthr", num_generations=4,
                     per_device_train_batch_size=8, max_completion_length=6, max_steps=1, use_cpu=True, bf16=False,
                     report_to=[], save_strategy="no", disable_tqdm=True, probe_set_size=0)

    def alternate(prompts, completions, **kwargs):
        return [float(i % 2) for i in range(len(completions))]

    trainer = LLDGRPOTrainer(model, [alternate], args, build_dataset(task, tokenizer, 8, seed=0),
                             processing_class=tokenizer)
    with pytest.raises(ValueError, match="log-probs are not log softmax"):
        trainer.train()
    assert (tmp_path / "run" / "meta.json").exists()


def _falcon_h1():
    import transformers
    torch.manual_seed(0)
    config = transformers.FalconH1Config(vocab_size=48, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=1, intermediate_size=32, mamba_d_ssm=32, mamba_n_heads=2,
                                         mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1, lm_head_multiplier=0.25)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    return model


@pytest.mark.parametrize("kind", ["gemma2", "cohere", "granite", "falcon_h1"])
def test_the_transforms_read_from_configs_pass_against_the_models_own_forward(kind):
    """The check is an independent recomputation of the transform the reader found: the model's own
    forward (through score_group) against log softmax(f(W h) / T)."""
    from test_model_forms import tiny_transformed_model

    from lld_probe.scoring import logit_transform_of
    model = _falcon_h1() if kind == "falcon_h1" else tiny_transformed_model(kind)
    assert not logit_transform_of(model).is_identity
    with tempfile.TemporaryDirectory() as store:
        _probe_one_group(model, store, logit_transform_of(model))
        with pytest.raises(ValueError, match="log-probs are not log softmax"):     # the identity would not pass
            _probe_one_group(model, store, None)
