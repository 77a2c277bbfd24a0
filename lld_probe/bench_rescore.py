"""`lld-probe bench rescore`: the cost of re-scoring one logged step (lld_probe.rescore) against the
training forward of the same batch.

One step's responses (prompts x G completions of `length` tokens, token ids drawn at random: the cost does
not depend on them) go through exactly what a re-scoring does per step: the packed scoring at the checkpoint
before with hidden states, entropy and NTHR, and the packed scoring at the checkpoint after (the same model
here; a different checkpoint costs the same). The training forward is TRL's layout: the padded rows with
gradients, log-probs of the completion tokens, and (reported too) the backward of their sum.
"""

from __future__ import annotations

import statistics
import time

import pandas as pd
import torch


def _step(tokenizer, prompts: int, group_size: int, length: int, vocab: int, seed: int):
    from .rescore.tokens import StepTokens
    generator = torch.Generator().manual_seed(seed)
    count = prompts * group_size
    prompt_ids = [tokenizer(text=f"What is {p} + {p}? Answer with a number.\nAnswer:")["input_ids"]
                  for p in range(prompts) for _ in range(group_size)]
    completion_ids = torch.randint(4, vocab, (count, length), generator=generator).tolist()
    correct = [(i % group_size) < group_size // 2 for i in range(count)]          # every group mixed
    rows = pd.DataFrame({"prompt_text": [str(p) for p in prompt_ids], "completion": [""] * count,
                         "reward": [float(c) for c in correct], "correct": correct,
                         "advantage": [1.0 if c else -1.0 for c in correct],
                         "question_id": [str(i // group_size) for i in range(count)]})
    tokens = StepTokens(prompt_ids, completion_ids, ["ids"] * count, [True] * count, [False] * count)
    return rows, tokens


def _seconds(work, repeats: int) -> float:
    work()                                   # warm-up (the one-time packing check, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_rescore_benchmark(model: str = "tiny", prompts: int = 8, group_size: int = 8, length: int = 64,
                          repeats: int = 3, max_tokens: int | None = None, device: str | None = None) -> dict:
    from .models import load_model
    from .probes import ProbeSettings
    from .rescore.work import generation_batch, score_after, score_before
    from .scoring.packing import DEFAULT_MAX_TOKENS
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    network, tokenizer = load_model(model, device=device)
    max_tokens = max_tokens or DEFAULT_MAX_TOKENS
    rows, tokens = _step(tokenizer, prompts, group_size, length, network.get_output_embeddings().weight.shape[0], 0)
    generation = generation_batch(1, rows, tokens, group_size=group_size,
                                  pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    settings = ProbeSettings(method="grpo", probe_score_max_tokens=max_tokens)

    def before():
        score_before(network, generation, settings, temperature=1.0, max_tokens=max_tokens)

    def after():
        score_after(network, generation, temperature=1.0, max_tokens=max_tokens)

    batch = generation.batch
    input_ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
    completion = batch.tokens.to(device)

    def training_forward(backward: bool):
        network.train()
        logits = batch.response_view(network(input_ids=input_ids, attention_mask=attention).logits)
        logps = torch.log_softmax(logits.float(), -1).gather(-1, completion[..., None])[..., 0]
        if backward:
            logps.sum().backward()
            network.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    before_s = _seconds(lambda: (before(), sync()), repeats)
    after_s = _seconds(lambda: (after(), sync()), repeats)
    rescore_s = before_s + after_s
    forward_s = _seconds(lambda: (training_forward(False), sync()), repeats)
    step_s = _seconds(lambda: (training_forward(True), sync()), repeats)
    count = generation.size
    result = {"model": model, "device": device, "responses": count, "completion_tokens": length,
              "rescore_s": rescore_s, "before_s": before_s, "after_s": after_s, "responses_per_s": count / rescore_s, "training_forward_s": forward_s,
              "training_forward_backward_s": step_s, "ratio_to_forward": rescore_s / forward_s,
              "ratio_to_forward_backward": rescore_s / step_s, "max_tokens": max_tokens}
    print(f"bench rescore ({model}, {device}, {prompts} prompts x G={group_size}, {length} completion tokens): "
          f"{result['responses_per_s']:.0f} responses/s re-scored (before with NTHR + after, packed, "
          f"{max_tokens} tokens per forward; before {before_s * 1e3:.0f} ms, after {after_s * 1e3:.0f} ms) | the same batch's training forward {forward_s * 1e3:.0f} ms, "
          f"forward+backward {step_s * 1e3:.0f} ms | re-scoring a step = {result['ratio_to_forward']:.2f}x its "
          f"training forward, {result['ratio_to_forward_backward']:.2f}x forward+backward")
    return result
