import math

import pytest
import torch

import brute
from lld_probe.core import interaction_scores, nthr_select, nthr_threshold, nthr_token_scores


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("vocab", ["full", "group"])
@pytest.mark.parametrize("method", ["outer", "pairwise", "auto"])
def test_scores_and_anchors_match_brute_force(seed, vocab, method):
    hidden, unembed, tokens, mask, correct = brute.random_group(seed)
    result = nthr_token_scores(hidden, unembed, tokens, mask, correct, temperature=0.7, vocab=vocab,
                               method=method, budget=7 * int(mask.sum()))  # chunk of 7 columns: 11 % 7 != 0
    scores, anchors = brute.nthr(hidden, unembed, tokens, mask, correct, temperature=0.7, vocab=vocab)
    torch.testing.assert_close(result.scores, scores, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(result.anchors, anchors, rtol=1e-10, atol=1e-10, equal_nan=True)
    assert bool((result.scores[~mask] == 0).all())


@pytest.mark.parametrize("vocab", ["full", "group"])
def test_anchor_without_self_interaction(vocab):
    hidden, unembed, tokens, mask, correct = brute.random_group(3, G=6)
    result = nthr_token_scores(hidden, unembed, tokens, mask, correct, vocab=vocab, anchor_self=False)
    expected_scores, expected_anchors = brute.nthr(hidden, unembed, tokens, mask, correct, vocab=vocab,
                                                   anchor_self=False)
    torch.testing.assert_close(result.scores, expected_scores, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(result.anchors, expected_anchors, rtol=1e-10, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("vocab", ["full", "group"])
def test_token_logprobs_supply_the_normaliser(vocab):
    hidden, unembed, tokens, mask, correct = brute.random_group(4)
    temperature = 1.3
    logits = hidden @ unembed.T / temperature
    old_logprobs = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    with_lp = nthr_token_scores(hidden, unembed, tokens, mask, correct, temperature=temperature,
                                vocab=vocab, token_logprobs=old_logprobs)
    without = nthr_token_scores(hidden, unembed, tokens, mask, correct, temperature=temperature, vocab=vocab)
    torch.testing.assert_close(with_lp.scores, without.scores, rtol=1e-10, atol=1e-10)


def test_float32_agrees_with_float64():
    hidden, unembed, tokens, mask, correct = brute.random_group(5, G=8, T=12, d=16, V=300)
    exact = nthr_token_scores(hidden, unembed, tokens, mask, correct).scores
    single = nthr_token_scores(hidden.float(), unembed.float(), tokens, mask, correct).scores
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-4)


def test_outer_and_pairwise_orders_agree_on_larger_group():
    hidden, unembed, tokens, mask, correct = brute.random_group(6, G=8, T=40, d=24, V=500)
    outer = nthr_token_scores(hidden, unembed, tokens, mask, correct, method="outer", budget=1000)
    pairwise = nthr_token_scores(hidden, unembed, tokens, mask, correct, method="pairwise", budget=1000)
    torch.testing.assert_close(outer.scores, pairwise.scores, rtol=1e-9, atol=1e-9)


def test_group_vocab_differs_from_full_but_keeps_full_normaliser():
    hidden, unembed, tokens, mask, correct = brute.random_group(7)
    full = nthr_token_scores(hidden, unembed, tokens, mask, correct, vocab="full").scores
    group = nthr_token_scores(hidden, unembed, tokens, mask, correct, vocab="group").scores
    assert not torch.allclose(full, group)
    # restricting to all columns is the full computation
    every = interaction_scores(hidden, unembed, tokens, mask, (mask & correct[:, None]).double(),
                               columns=torch.arange(unembed.shape[0]))
    torch.testing.assert_close(every, full, rtol=1e-10, atol=1e-10)


def test_no_correct_response_gives_zero_scores_and_nan_anchors():
    hidden, unembed, tokens, mask, _ = brute.random_group(8)
    correct = torch.zeros(mask.shape[0], dtype=torch.bool)
    result = nthr_token_scores(hidden, unembed, tokens, mask, correct)
    assert bool((result.scores == 0).all())
    assert bool(torch.isnan(result.anchors).all())
    assert not nthr_select(result.scores, mask, correct, result.anchors).any()
    assert bool(nthr_select(result.scores, mask, correct, result.anchors, beta=-math.inf).eq(mask).all())


def test_no_incorrect_response_selects_nothing():
    hidden, unembed, tokens, mask, _ = brute.random_group(9)
    correct = torch.ones(mask.shape[0], dtype=torch.bool)
    result = nthr_token_scores(hidden, unembed, tokens, mask, correct)
    assert not torch.isnan(result.anchors).any()
    for beta in (1.0, 0.0, -math.inf):
        assert not nthr_select(result.scores, mask, correct, result.anchors, beta=beta).any()


def test_length_one_response_and_all_padding_row():
    hidden, unembed, tokens, mask, correct = brute.random_group(10, G=4, T=5)
    mask[1] = False
    mask[1, 0] = True          # a response of length 1
    mask[2] = False            # all padding
    correct = torch.tensor([True, True, False, False])
    result = nthr_token_scores(hidden, unembed, tokens, mask, correct)
    scores, anchors = brute.nthr(hidden, unembed, tokens, mask, correct)
    torch.testing.assert_close(result.scores, scores, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(result.anchors, anchors, rtol=1e-10, atol=1e-10, equal_nan=True)
    assert bool((result.scores[2] == 0).all())


def test_all_padding_group():
    hidden, unembed, tokens, mask, correct = brute.random_group(11)
    mask[:] = False
    result = nthr_token_scores(hidden, unembed, tokens, mask, correct)
    assert bool((result.scores == 0).all()) and bool(torch.isnan(result.anchors).all())
    assert not nthr_select(result.scores, mask, correct, result.anchors).any()


def test_select_threshold_semantics():
    scores = torch.tensor([[1.0, 2.0, 0.0], [0.5, 3.0, -1.0], [0.4, 0.6, 5.0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    correct = torch.tensor([True, False, False])
    anchors = torch.tensor([0.5, math.nan, math.nan])
    selected = nthr_select(scores, mask, correct, anchors, beta=1.0)
    # tau = 0.5; strictly greater; incorrect rows only
    assert selected.tolist() == [[False, False, False], [False, True, False], [False, True, True]]
    assert nthr_threshold(anchors, correct, 2.0) == 1.0
    assert nthr_select(scores, mask, correct, anchors, beta=0.0).tolist() == [
        [False, False, False], [True, True, False], [True, True, True]]
    negative_anchor = torch.tensor([-2.0, math.nan, math.nan])
    # beta = -inf selects every incorrect token even with a negative anchor (-inf * -2 would be +inf)
    everything = nthr_select(scores, mask, correct, negative_anchor, beta=-math.inf)
    assert everything.tolist() == [[False, False, False], [True, True, True], [True, True, True]]


@pytest.mark.parametrize("bad, message", [
    (dict(hidden=torch.zeros(2, 3)), "hidden"),
    (dict(unembed=torch.zeros(7, 5)), "unembed"),
    (dict(tokens=torch.zeros(2, 4, dtype=torch.long)), "tokens"),
    (dict(tokens=torch.zeros(2, 3)), "tokens"),
    (dict(mask=torch.ones(2, 3)), "mask"),
    (dict(correct=torch.ones(3, dtype=torch.bool)), "correct"),
    (dict(hidden=torch.full((2, 3, 4), math.nan)), "hidden"),
    (dict(tokens=torch.full((2, 3), 99, dtype=torch.long)), "tokens"),
    (dict(vocab="V*"), "vocab"),
    (dict(temperature=0.0), "temperature"),
])
def test_bad_arguments_name_the_argument(bad, message):
    args = dict(hidden=torch.zeros(2, 3, 4), unembed=torch.zeros(7, 4), tokens=torch.zeros(2, 3, dtype=torch.long),
                mask=torch.ones(2, 3, dtype=torch.bool), correct=torch.tensor([True, False]))
    options = {k: bad.pop(k) for k in list(bad) if k in ("vocab", "temperature")}
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        nthr_token_scores(**args, **options)


def test_select_rejects_bad_beta():
    with pytest.raises(ValueError, match="beta"):
        nthr_select(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool), torch.tensor([True, False]),
                    torch.zeros(2), beta=math.nan)
