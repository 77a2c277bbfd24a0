"""The supervised warm-up shared by the shipped models' recipes (tiny, chain): completion-only steps,
sampled accuracy on probe questions, and saving the model with its training record."""

from __future__ import annotations

import json
from pathlib import Path

from ..tasks import format_prompt
from .generation import sample_groups


def completion_only_step(model, tokenizer, optimizer, prompts: list[str], completions: list[str]):
    """One optimizer step of cross-entropy on the completions only (prompt tokens masked); returns the loss."""
    model.train()
    batch = tokenizer([p + c for p, c in zip(prompts, completions)], return_tensors="pt", padding=True,
                      padding_side="right", add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for row, prompt in enumerate(prompts):     # loss on the completion only
        labels[row, : len(tokenizer(prompt, add_special_tokens=False)["input_ids"])] = -100
    loss = model(**batch, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def sampled_accuracy(model, tokenizer, task, questions, seed, *, max_new_tokens: int, **sampling):
    """(share of 8 samples per question the task accepts, share of questions with a mixed group)."""
    prompts = [format_prompt(tokenizer, q.prompt) for q in questions]
    groups = sample_groups(model, tokenizer, prompts, group_size=8, temperature=1.0, max_new_tokens=max_new_tokens,
                           seed=seed, **sampling)
    rewards = [[task.reward(c.text, q.answer).reward for c in group] for q, group in zip(questions, groups)]
    accuracy = sum(map(sum, rewards)) / (8 * len(rewards))
    mixed = sum(0 < sum(r) < 8 for r in rewards) / len(rewards)
    return accuracy, mixed


def save_warmed_model(model, tokenizer, out: Path, info: dict) -> dict:
    """Save the model (generation cache on), its tokenizer and training.json with the parameter count."""
    out.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {**{k: v for k, v in info.items() if k != "log"}, "parameters": sum(p.numel() for p in model.parameters()),
            "log": info.get("log", [])}
    (out / "training.json").write_text(json.dumps(info, indent=1))
    return info
