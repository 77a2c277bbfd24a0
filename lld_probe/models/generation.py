"""Sampling and greedy decoding of groups of completions, returning token ids exactly as sampled."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
                  max_new_tokens: int = 32, seed: int = 0, batch_prompts: int = 8) -> list[list[Completion]]:
    """group_size samples per prompt at `temperature` (pure sampling: top_k=0, top_p=1), seeded."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if not prompts:
        return []
    eos_id = tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    groups = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for start in range(0, len(prompts), batch_prompts):
            chunk = prompts[start:start + batch_prompts]
            prompt_ids, prompt_mask = _encode_prompts(tokenizer, chunk)
            output = model.generate(input_ids=prompt_ids.to(model.device), attention_mask=prompt_mask.to(model.device),
                                    do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                    max_new_tokens=max_new_tokens, num_return_sequences=group_size,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_id)
            flat = _split(tokenizer, prompt_ids.repeat_interleave(group_size, 0),
                          prompt_mask.repeat_interleave(group_size, 0), output.cpu(), eos_id)
            groups += [flat[i:i + group_size] for i in range(0, len(flat), group_size)]
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return groups


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
