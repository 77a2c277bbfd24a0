"""Packed scoring (lld_probe.scoring.packing): the layout itself, and equality with full rows in float64."""

import pytest
import torch

from lld_probe.models import load_model
from lld_probe.scoring import build_group_batch, forward_logps, score_group
from lld_probe.scoring.packing import pack_rows, packing_unsupported_reason, plan_chunks


def test_layout_puts_each_prompt_once_and_restarts_positions_per_row():
    # rows 0 and 2 share prompt [5, 6]; row 1 has prompt [9]; row 3 has an empty completion
    batch = build_group_batch([[5, 6], [9], [5, 6], [9]], [[20, 21, 22], [30, 31], [40], []], pad_id=0)
    layout = pack_rows(batch)
    # prompt [5, 6], row 0's inputs 20 21 (22 predicts nothing), row 2's (none), prompt [9], row 1's 30
    assert layout.input_ids.tolist() == [5, 6, 20, 21, 9, 30]
    assert layout.position_ids.tolist() == [0, 1, 2, 3, 0, 1]
    # token j of a row is predicted by the last prompt token (j = 0) or by the row's token j - 1
    # batch.mask order: row 0 (20, 21, 22), row 1 (30, 31), row 2 (40)
    assert layout.predictor.tolist() == [1, 2, 3, 4, 5, 1]
    allowed = layout.allowed
    assert allowed[3].tolist() == [True, True, True, True, False, False]    # row 0's 21: prompt + own prefix
    assert allowed[5].tolist() == [False, False, False, False, True, True]  # row 1's 30: its own prompt only
    assert allowed[1].tolist() == [True, True, False, False, False, False]  # prompts are causal


def test_chunks_respect_the_token_budget_and_keep_rows_of_a_prompt_together():
    prompt_a, prompt_b = [1] * 10, [2] * 10
    batch = build_group_batch([prompt_a] * 3 + [prompt_b] * 2, [[7] * 6] * 5, pad_id=0)
    chunks = plan_chunks(batch, max_tokens=25)      # a prompt costs 10 tokens, a row 5 inputs
    assert [c.tolist() for c in chunks] == [[0, 1, 2], [3, 4]]
    assert sorted(torch.cat(chunks).tolist()) == list(range(5))
    assert [c.tolist() for c in plan_chunks(batch, max_tokens=1)] == [[0], [1], [2], [3], [4]]
    # one prompt with more rows than a forward holds: near-equal parts, not a full chunk and a leftover
    big = build_group_batch([prompt_a] * 16, [[7] * 6] * 16, pad_id=0)      # 10 + 16 x 5 = 90 tokens
    assert [c.tolist() for c in plan_chunks(big, max_tokens=60)] == [list(range(8)), list(range(8, 16))]


@pytest.mark.parametrize("max_tokens", [512, 12])
def test_packed_equals_full_rows_in_float64(max_tokens):
    """Several prompts of different lengths, a one-token and an empty completion, one chunk or many:
    log-probs, entropy and hidden states equal the full padded rows to float64 rounding, gradients too
    (within the float32 rounding of transformers' norms)."""
    model, _ = load_model("tiny")
    model = model.double().eval()
    prompts = [[5, 6, 7, 8, 9], [5, 6, 7, 8, 9], [11, 12], [5, 6, 7, 8, 9], [11, 12]]
    completions = [[20, 21, 22], [30], [40, 41, 42, 43, 44], [], [50, 51]]
    batch = build_group_batch(prompts, completions, pad_id=0)
    results = {}
    for layout in ("packed", "rows"):
        model.zero_grad(set_to_none=True)
        scored = forward_logps(model, batch, with_hidden=True, with_entropy=True, layout=layout, max_tokens=max_tokens)
        (scored.token_logps * torch.arange(1.0, 6.0, dtype=torch.float64)[:, None]).sum().backward()
        results[layout] = (scored, {name: p.grad.clone() for name, p in model.named_parameters()})
    (packed, packed_grads), (rows, rows_grads) = results["packed"], results["rows"]
    assert packed.token_logps.dtype == torch.float64
    torch.testing.assert_close(packed.token_logps, rows.token_logps, rtol=0, atol=1e-10)
    torch.testing.assert_close(packed.entropy, rows.entropy, rtol=0, atol=1e-10)
    torch.testing.assert_close(packed.hidden[batch.mask], rows.hidden[batch.mask], rtol=0, atol=1e-10)
    assert (packed.token_logps[~batch.mask] == 0).all() and (packed.hidden[~batch.mask] == 0).all()
    # transformers runs RMSNorm and rotary in float32 even in a float64 model: identical inputs give identical
    # values, but gradients summed once through a shared prompt (instead of per row) round at ~1e-8
    for name, grad in rows_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-6, atol=1e-6 * float(grad.abs().max()), msg=name)


def test_unsupported_models_are_named_and_auto_falls_back(monkeypatch):
    from lld_probe.scoring import scoring
    model, _ = load_model("tiny")
    batch = build_group_batch([[5, 6, 7]] * 2, [[20, 21], [30]], pad_id=0)
    assert packing_unsupported_reason(model, batch) is None
    expected = score_group(model, batch, layout="rows").token_logps
    low, _ = load_model("tiny", dtype=torch.bfloat16)
    low.config._attn_implementation = "flash_attention_2"       # no custom 4D masks
    assert "flash_attention_2" in packing_unsupported_reason(low, batch)
    with pytest.raises(ValueError, match="packed scoring is not possible here: attention implementation"):
        score_group(low, batch, layout="packed")
    # float32 weights: the probes' float32 forwards run sdpa (flash-attention takes no float32), so they pack
    model.config._attn_implementation = "flash_attention_2"
    try:
        torch.testing.assert_close(score_group(model, batch, layout="packed").token_logps, expected,
                                   rtol=0, atol=1e-5)
        assert model.config._attn_implementation == "flash_attention_2"
    finally:
        model.config._attn_implementation = "sdpa"
    model.config.layer_types = ["full_attention", "linear_attention", "full_attention", "full_attention"]
    assert "linear_attention" in packing_unsupported_reason(model, batch)
    model.config.layer_types = ["sliding_attention"] * 4
    model.config.sliding_window = 4                            # rows of 5 tokens exceed it
    assert "sliding window" in packing_unsupported_reason(model, batch)
    model.config.sliding_window = 5
    assert packing_unsupported_reason(model, batch) is None
    model.config.layer_types = ["full_attention"] * 4
    monkeypatch.setattr(scoring, "pack_rows", None)            # "auto" must not try to pack
    monkeypatch.setattr(scoring, "packing_unsupported_reason", lambda model, batch: "some reason")
    torch.testing.assert_close(score_group(model, batch).token_logps, expected)


def test_a_model_that_fails_the_packing_check_is_scored_in_padded_rows_with_a_warning(monkeypatch):
    """The one-time check catches layers the mask does not control; simulated by a mask that lets every
    row see every other row."""
    from lld_probe.scoring import scoring
    model, _ = load_model("tiny")
    batch = build_group_batch([[5, 6, 7]] * 3, [[20, 21, 22], [30, 31], [40, 41, 42]], pad_id=0)
    expected = score_group(model, batch, layout="rows").token_logps
    monkeypatch.setattr(scoring, "attention_bias",
                        lambda allowed, model, device: torch.ones_like(allowed)[None, None].tril().bool())
    with pytest.warns(UserWarning, match="differs from full rows .* padded rows instead"):
        first = score_group(model, batch).token_logps
    assert scoring.packing_verified(model) is False
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(score_group(model, batch).token_logps, expected)     # no second check
