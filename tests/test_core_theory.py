import math

import pytest
import torch

import brute
from lld_probe.core import ches, first_order_logp_change, group_advantages, gwhes, preference_weights


@pytest.mark.parametrize("seed", [0, 1])
def test_gwhes_matches_brute_force(seed):
    hidden, unembed, tokens, mask, correct = brute.random_group(seed, G=6)
    result = gwhes(hidden, unembed, tokens, mask, correct, temperature=0.8)
    expected = brute.gwhes(hidden, unembed, tokens, mask, correct, temperature=0.8)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    assert torch.isnan(result[~correct]).all()


def test_gwhes_without_mixed_group_is_zero_weighted():
    hidden, unembed, tokens, mask, _ = brute.random_group(2)
    correct = torch.ones(mask.shape[0], dtype=torch.bool)
    assert preference_weights(correct) == (0.0, 0.0)
    assert (gwhes(hidden, unembed, tokens, mask, correct) == 0).all()


def _sequence_logps(weight, hidden, tokens, mask, temperature):
    logps = torch.log_softmax(hidden @ weight.T / temperature, -1).gather(-1, tokens[..., None]).squeeze(-1)
    return (logps * mask).sum(1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_first_order_prediction_matches_a_real_sgd_step(temperature):
    """Frozen features, trainable unembedding: the prediction is the exact first-order change."""
    hidden, unembed, tokens, mask, correct = brute.random_group(3, G=6, T=7, d=5, V=13)
    advantages = group_advantages(correct.double(), 6, std="population", eps=0.0)
    lr = 1e-5
    weight = unembed.clone().requires_grad_(True)
    logps = torch.log_softmax(hidden @ weight.T / temperature, -1).gather(-1, tokens[..., None]).squeeze(-1)
    loss = -(advantages[:, None] * logps * mask).sum() / mask.sum()       # token-mean GRPO loss at ratio 1
    loss.backward()
    with torch.no_grad():
        updated = unembed - lr * weight.grad
        measured = (_sequence_logps(updated, hidden, tokens, mask, temperature)
                    - _sequence_logps(unembed, hidden, tokens, mask, temperature))
    predicted = first_order_logp_change(hidden, unembed, tokens, mask, advantages, lr=lr, temperature=temperature)
    torch.testing.assert_close(predicted, measured, rtol=1e-4, atol=1e-12)


def test_first_order_prediction_is_gwhes_for_population_advantages():
    """For a correct response, Delta = lr/(Z T^2) ((I) - (II)) = -lr/(Z T^2) GWHES."""
    hidden, unembed, tokens, mask, correct = brute.random_group(4, G=6)
    advantages = group_advantages(correct.double(), 6, std="population", eps=0.0)
    predicted = first_order_logp_change(hidden, unembed, tokens, mask, advantages, lr=2.0, normalizer=10.0)
    scores = gwhes(hidden, unembed, tokens, mask, correct)
    torch.testing.assert_close(predicted[correct], -2.0 / 10.0 * scores[correct], rtol=1e-10, atol=1e-10)


def test_first_order_prediction_with_per_token_advantages_matches_brute_force():
    hidden, unembed, tokens, mask, correct = brute.random_group(5, G=4)
    per_token = torch.randn(mask.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * mask
    predicted = first_order_logp_change(hidden, unembed, tokens, mask, per_token, normalizer=1.0, temperature=1.5)
    expected = brute.interaction(hidden, unembed, tokens, mask, per_token, 1.5).sum(1) / 1.5 ** 2
    torch.testing.assert_close(predicted, expected, rtol=1e-10, atol=1e-10)


def test_first_order_prediction_rejects_bad_normalizer():
    hidden, unembed, tokens, mask, correct = brute.random_group(6)
    with pytest.raises(ValueError, match="normalizer"):
        first_order_logp_change(hidden, unembed, tokens, mask, correct.double(), normalizer="batch")
    with pytest.raises(ValueError, match="advantages"):
        first_order_logp_change(hidden, unembed, tokens, mask, torch.ones(3, dtype=torch.float64))


def test_ches_matches_hand_computation():
    gen = torch.Generator().manual_seed(0)
    chosen = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen)
    rejected = torch.randn(2, 5, 3, dtype=torch.float64, generator=gen)
    mask_chosen = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    mask_rejected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    result = ches(chosen, mask_chosen, rejected, mask_rejected)
    for b in range(2):
        plus = sum(chosen[b, t] for t in range(4) if mask_chosen[b, t])
        minus = sum(rejected[b, t] for t in range(5) if mask_rejected[b, t])
        assert result[b].item() == pytest.approx(float(plus @ minus - plus @ plus))
    normalized = ches(chosen, mask_chosen, rejected, mask_rejected, length_normalized=True)
    plus = chosen[0, :3].mean(0)
    minus = rejected[0, :2].mean(0)
    assert normalized[0].item() == pytest.approx(float(plus @ minus - plus @ plus))
    with pytest.raises(ValueError, match="mask_rejected"):
        ches(chosen, mask_chosen, rejected, mask_chosen)


@pytest.mark.parametrize("method", ["pairwise", "outer"])
@pytest.mark.parametrize("vocab", ["full", "group"])
def test_first_order_prediction_of_stacked_updates_equals_one_call_each(method, vocab):
    """[K, G, T] advantages (the protocol's methods) share the vocabulary pass; each row must equal
    its own call, for both evaluation orders."""
    hidden, unembed, tokens, mask, correct = brute.random_group(4, G=5, T=6, d=4, V=11)
    generator = torch.Generator().manual_seed(0)
    stacked = torch.randn((3, *tokens.shape), generator=generator, dtype=torch.float64)
    stacked[1, 2] = 0.0                         # a response that is a source in some updates only
    result = first_order_logp_change(hidden, unembed, tokens, mask, stacked, lr=0.1, temperature=0.9,
                                     vocab=vocab, method=method, normalizer=1.0)
    assert result.shape == (3, tokens.shape[0])
    for k in range(3):
        single = first_order_logp_change(hidden, unembed, tokens, mask, stacked[k], lr=0.1, temperature=0.9,
                                         vocab=vocab, method=method, normalizer=1.0)
        torch.testing.assert_close(result[k], single, rtol=1e-12, atol=1e-12)
        if vocab == "full":           # and the float64 brute force
            expected = 0.1 * brute.interaction(hidden, unembed, tokens, mask, stacked[k] * mask, 0.9).sum(1) / 0.9 ** 2
            torch.testing.assert_close(result[k], expected, rtol=1e-10, atol=1e-10)
