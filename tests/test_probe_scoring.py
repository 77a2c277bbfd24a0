import pytest
import torch

from lld_probe.core import align_next_token, token_logprobs
from lld_probe.models import load_model
from lld_probe.scoring import build_group_batch, capture_final_hidden, output_embedding_weight, score_group


@pytest.mark.parametrize("layout", ["packed", "shared_prompt", "rows"])
def test_response_layout_and_alignment_against_full_sequence_scoring(layout):
    model, tokenizer = load_model("tiny")
    prompts = [[5, 6, 7, 8], [5, 6, 7, 8], [9, 10]]
    completions = [[20, 21, 22], [30], [40, 41, 42, 43]]
    batch = build_group_batch(prompts, completions, tokenizer.pad_token_id)
    assert batch.tokens.tolist() == [[20, 21, 22, 0], [30, 0, 0, 0], [40, 41, 42, 43]]
    scored = score_group(model, batch, with_hidden=True, with_entropy=True, layout=layout)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad(), capture_final_hidden(model) as captured:
            logits = model(input_ids=ids).logits
        response_mask = torch.zeros_like(ids, dtype=torch.bool)
        response_mask[0, len(prompt):] = True
        aligned, tokens, mask = align_next_token(logits, ids, response_mask)
        expected = token_logprobs(aligned, tokens, mask)[mask]
        torch.testing.assert_close(scored.token_logps[row][batch.mask[row]], expected, rtol=1e-5, atol=1e-5)
        # the hidden state at position t-1 predicts token t: lm_head(h) reproduces the logits
        hidden, _, _ = align_next_token(captured["hidden"], ids, response_mask)
        torch.testing.assert_close(scored.hidden[row][batch.mask[row]], hidden[mask], rtol=1e-5, atol=1e-5)
    head = output_embedding_weight(model)
    logits_from_hidden = scored.hidden @ head.T
    manual = torch.log_softmax(logits_from_hidden, -1).gather(-1, batch.tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(manual[batch.mask], scored.token_logps[batch.mask], rtol=1e-4, atol=1e-4)
    assert (scored.token_logps[~batch.mask] == 0).all() and (scored.entropy[~batch.mask] == 0).all()


def test_empty_group_and_prompt_are_errors():
    import pytest
    with pytest.raises(ValueError, match="empty group"):
        build_group_batch([], [], 0)
    with pytest.raises(ValueError, match="empty prompt"):
        build_group_batch([[]], [[1]], 0)


@pytest.mark.parametrize("layout", ["shared_prompt", "packed"])
def test_shared_prompt_forward_equals_full_rows_in_values_hidden_states_and_gradients(layout):
    from lld_probe.scoring import forward_logps
    model, tokenizer = load_model("tiny")
    model.eval()
    prompt = [5, 6, 7, 8, 9]
    completions = [[20, 21, 22], [30], [40, 41, 42, 43], [50, 51]]
    batch = build_group_batch([prompt] * 4, completions, tokenizer.pad_token_id)
    results = {}
    for name in (layout, "rows"):
        model.zero_grad(set_to_none=True)
        scored = forward_logps(model, batch, with_hidden=True, with_entropy=True, layout=name)
        (scored.token_logps * torch.arange(1.0, 5.0)[:, None]).sum().backward()
        results[name] = (scored, {name: p.grad.clone() for name, p in model.named_parameters()})
    (shared, shared_grads), (full, full_grads) = results[layout], results["rows"]
    torch.testing.assert_close(shared.token_logps, full.token_logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared.hidden[batch.mask], full.hidden[batch.mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared.entropy, full.entropy, rtol=1e-5, atol=1e-5)
    for name, grad in full_grads.items():     # the prompt's states get the gradient of every row through the cache
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()), msg=name)
    # the first completion token is predicted by the last prompt token's state
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
    expected = torch.log_softmax(logits, -1)[completions[0][0]]
    torch.testing.assert_close(shared.token_logps[0, 0].detach(), expected, rtol=1e-5, atol=1e-5)
