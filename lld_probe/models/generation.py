"""Sampling and greedy decoding of groups of completions, returning token ids exactly as sampled."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .kv_cache import prefill_repeated, prefill_unsupported_reason, with_cache


@dataclass
class Completion:
    prompt_ids: list[int]
    completion_ids: list[int]      # sampled tokens, up to and including eos when it was generated
    text: str                      # decoded completion without special tokens


def _encode_prompts(tokenizer, prompts):
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                      add_special_tokens=False)
    return batch["input_ids"], batch["attention_mask"]


def _split(tokenizer, prompt_ids, prompt_mask, output, eos_id):
    results = []
    width = prompt_ids.shape[1]
    for row in range(output.shape[0]):
        prompt = prompt_ids[row][prompt_mask[row].bool()].tolist()
        generated = output[row, width:].tolist()
        if eos_id is not None and eos_id in generated:
            generated = generated[: generated.index(eos_id) + 1]
        else:
            pad_id = tokenizer.pad_token_id
            while generated and pad_id is not None and generated[-1] == pad_id and pad_id != eos_id:
                generated.pop()
        results.append(Completion(prompt, generated, tokenizer.decode(generated, skip_special_tokens=True)))
    return results


@torch.no_grad()
def sample_groups(model, tokenizer, prompts: list[str], *, group_size: int = 8, temperature: float = 1.0,
                  max_new_tokens: int = 32, seed: int = 0, batch_prompts: int = 8,
                  engine: str = "shared") -> list[list[Completion]]:
    """group_size samples per prompt at `temperature` (pure sampling: top_k=0, top_p=1), seeded.

    engine "shared": each prompt is computed once (its KV cache repeated for the group) and rows leave
    the batch when they emit eos (lld_probe's decoding loop, a torch.Generator per call); "hf":
    transformers' generate with the prompt repeated per sample (the engine of the committed survey and
    tiny-model numbers). Both sample from the same distribution; their random streams differ."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if engine not in ("shared", "hf"):
        raise ValueError(f"engine must be 'shared' or 'hf', got {engine!r}")
    if not prompts:
        return []
    was_training = model.training
    model.eval()
    groups = []
    # torch.manual_seed reseeds the CPU and every GPU: the caller's random state on all of them is restored
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        generator = torch.Generator(device=model.device).manual_seed(seed)
        try:
            for start in range(0, len(prompts), batch_prompts):
                flat = _sample_chunk(model, tokenizer, prompts[start:start + batch_prompts], group_size, temperature,
                                     max_new_tokens, engine, generator)
                groups += [flat[i:i + group_size] for i in range(0, len(flat), group_size)]
        finally:
            model.train(was_training)
    return groups


def _sample_chunk(model, tokenizer, prompts, group_size, temperature, max_new_tokens, engine, generator):
    """group_size completions of each prompt, prompt-major."""
    eos_id = tokenizer.eos_token_id
    prompt_ids, prompt_mask = _encode_prompts(tokenizer, prompts)
    if engine == "shared":
        rows = decode_rows(model, prompt_ids, prompt_mask, group_size=group_size, temperature=temperature,
                           max_new_tokens=max_new_tokens, eos_id=eos_id, generator=generator)
        return [_completion(tokenizer, prompt_ids[i // group_size][prompt_mask[i // group_size].bool()].tolist(), row)
                for i, row in enumerate(rows)]
    output = model.generate(input_ids=prompt_ids.to(model.device), attention_mask=prompt_mask.to(model.device),
                            do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                            max_new_tokens=max_new_tokens, num_return_sequences=group_size,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_id)
    return _split(tokenizer, prompt_ids.repeat_interleave(group_size, 0), prompt_mask.repeat_interleave(group_size, 0),
                  output.cpu(), eos_id)


def _completion(tokenizer, prompt: list[int], tokens: list[int]) -> Completion:
    return Completion(prompt, tokens, tokenizer.decode(tokens, skip_special_tokens=True))


@torch.no_grad()
def decode_rows(model, prompt_ids, prompt_mask, *, group_size: int, temperature: float | None,
                max_new_tokens: int, eos_id: int | None, generator=None) -> list[list[int]]:
    """Decode group_size continuations of each left-padded prompt [P, L]; temperature None is greedy.
    Returns P * group_size token lists (prompt-major), each up to and including eos. The prompts run
    once through the model; their cache is repeated per row, and finished rows leave the batch."""
    device = model.device
    reason = prefill_unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"{reason}: use engine='hf'")
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    positions = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)     # left padding: real tokens count from 0
    output, cache = prefill_repeated(model, prompt_ids, group_size, attention_mask=prompt_mask,
                                     position_ids=positions)
    if cache is None:
        raise ValueError("the model returned no KV cache (gradient checkpointing?): use engine='hf'")
    logits = output.logits[:, -1].repeat_interleave(group_size, 0)
    mask = prompt_mask.repeat_interleave(group_size, 0)
    next_position = positions[:, -1].repeat_interleave(group_size) + 1
    active = torch.arange(logits.shape[0], device=device)
    rows = [[] for _ in range(logits.shape[0])]
    for step in range(max_new_tokens):
        if temperature is None:
            tokens = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        for row, token in zip(active.tolist(), tokens.tolist()):
            rows[row].append(token)
        alive = tokens != eos_id if eos_id is not None else torch.ones_like(tokens, dtype=torch.bool)
        if step == max_new_tokens - 1 or not bool(alive.any()):
            break
        if not bool(alive.all()):             # finished rows leave the batch (and the cache)
            keep = alive.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, tokens, mask, next_position = active[keep], tokens[keep], mask[keep], next_position[keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        output = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position[:, None],
                       use_cache=True, **with_cache(model, cache))
        logits = output.logits[:, -1]
        next_position = next_position + 1
    return rows


@torch.no_grad()
def greedy_completions(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 32,
                       batch_prompts: int = 32) -> list[Completion]:
    """Greedy decoding (the paper's evaluation protocol)."""
    was_training = model.training
    model.eval()
    results = []
    try:
        for start in range(0, len(prompts), batch_prompts):
            prompt_ids, prompt_mask = _encode_prompts(tokenizer, prompts[start:start + batch_prompts])
            output = model.generate(input_ids=prompt_ids.to(model.device), attention_mask=prompt_mask.to(model.device),
                                    do_sample=False, max_new_tokens=max_new_tokens,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            results += _split(tokenizer, prompt_ids, prompt_mask, output.cpu(), tokenizer.eos_token_id)
    finally:
        model.train(was_training)
    return results
