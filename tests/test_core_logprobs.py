import math

import pytest
import torch

from lld_probe.core import align_next_token, sequence_logprob, token_entropy, token_logprobs


def test_hand_computed_alignment():
    # vocabulary of 3; the output at position t-1 predicts the token at position t
    input_ids = torch.tensor([[2, 0, 1]])
    logits = torch.tensor([[[0.0, math.log(3.0), 0.0],     # predicts position 1 (token 0): p = 1/5
                            [math.log(2.0), 0.0, 0.0],     # predicts position 2 (token 1): p = 1/4
                            [9.0, 9.0, 9.0]]])             # predicts beyond the sequence: dropped
    response_mask = torch.tensor([[False, True, True]])
    aligned, tokens, mask = align_next_token(logits, input_ids, response_mask)
    assert tokens.tolist() == [[0, 1]]
    logps = token_logprobs(aligned, tokens, mask)
    torch.testing.assert_close(logps, torch.tensor([[math.log(1 / 5), math.log(1 / 4)]]))
    assert sequence_logprob(logps, mask).item() == pytest.approx(math.log(1 / 20))
    assert sequence_logprob(logps, mask, reduction="mean").item() == pytest.approx(math.log(1 / 20) / 2)


def test_temperature_and_mask():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    tokens = torch.tensor([[2, 1]])
    mask = torch.tensor([[True, False]])
    result = token_logprobs(logits, tokens, mask, temperature=2.0)
    expected = 1.5 - math.log(math.exp(0.5) + math.exp(1.0) + math.exp(1.5))
    assert result[0, 0].item() == pytest.approx(expected)
    assert result[0, 1].item() == 0.0
    entropy = token_entropy(logits, mask)
    assert entropy[0, 1].item() == 0.0 and entropy[0, 0].item() > 0


def test_empty_response_mean_is_nan():
    assert math.isnan(sequence_logprob(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), reduction="mean").item())


def test_matches_hugging_face_loss():
    """Our aligned log-probs reproduce the causal-LM loss that transformers computes itself."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = Qwen2ForCausalLM(config).eval()
    input_ids = torch.randint(0, 50, (3, 10))
    labels = input_ids.clone()
    labels[:, :4] = -100                      # prompt tokens are not scored
    labels[2, 8:] = -100                      # a shorter response
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=labels)
    response_mask = labels != -100
    aligned, tokens, mask = align_next_token(out.logits, input_ids, response_mask)
    logps = token_logprobs(aligned, tokens, mask)
    ours = -(logps.sum() / mask.sum())
    torch.testing.assert_close(ours, out.loss, rtol=1e-5, atol=1e-5)


def test_hidden_state_alignment_matches_logits():
    """lm_head applied to the aligned final hidden state gives the logits that score token t."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = Qwen2ForCausalLM(config).eval()
    input_ids = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        out = model(input_ids=input_ids, output_hidden_states=True)
    response_mask = torch.zeros(2, 7, dtype=torch.bool)
    response_mask[:, 3:] = True
    hidden, tokens, mask = align_next_token(out.hidden_states[-1], input_ids, response_mask)
    logits, _, _ = align_next_token(out.logits, input_ids, response_mask)
    torch.testing.assert_close(hidden @ model.lm_head.weight.T, logits, rtol=1e-5, atol=1e-5)
    assert tokens[0, 2].item() == input_ids[0, 3].item()


@pytest.mark.parametrize("call, message", [
    (lambda: align_next_token(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool)), "position 0"),
    (lambda: align_next_token(torch.zeros(1, 4, 4), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool)), "states"),
    (lambda: token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.long)), "tokens"),
    (lambda: token_logprobs(torch.zeros(2, 3, 4), torch.full((2, 3), 4)), "tokens"),
    (lambda: token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), temperature=-1.0), "temperature"),
    (lambda: sequence_logprob(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), reduction="max"), "reduction"),
])
def test_errors_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
