"""Held-out greedy accuracy (the paper's evaluation protocol), for the probes' eval/accuracy metric."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def greedy_accuracy(model, tokenizer, questions, task, *, max_new_tokens: int) -> float:
    """Share of questions whose greedy completion the task's answer check accepts."""
    from ..models.generation import greedy_completions
    from ..tasks import format_prompt
    prompts = [format_prompt(tokenizer, q.prompt) for q in questions]
    completions = greedy_completions(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    return float(np.mean([task.reward(c.text, q.answer).reward for c, q in zip(completions, questions)]))
