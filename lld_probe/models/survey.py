"""How suitable a model is as an LLD testbed: share of mixed groups and accuracies on a task."""

from __future__ import annotations

from ..tasks import format_prompt
from .generation import greedy_completions, sample_groups

def survey(model, tokenizer, task, *, n_questions=32, group_size=8, temperature=1.0, max_new_tokens=32,
           seed=0, eval_questions=None) -> dict:
    """Sample groups for n_questions train questions; greedy-decode eval_questions when given."""
    questions = task.questions(n_questions, seed=seed)
    prompts = [format_prompt(tokenizer, q.prompt) for q in questions]
    groups = sample_groups(model, tokenizer, prompts, group_size=group_size, temperature=temperature,
                           max_new_tokens=max_new_tokens, seed=seed, engine="hf")   # the README's survey numbers
    correct_counts = [sum(task.reward(c.text, q.answer).reward for c in group) for q, group in zip(questions, groups)]
    result = {"questions": len(questions), "group_size": group_size, "temperature": temperature,
              "mixed_share": sum(0 < n < group_size for n in correct_counts) / len(questions),
              "sampled_accuracy": sum(correct_counts) / (group_size * len(questions)),
              "correct_count_histogram": {k: correct_counts.count(k) for k in range(group_size + 1)}}
    if eval_questions:
        completions = greedy_completions(model, tokenizer, [format_prompt(tokenizer, q.prompt) for q in eval_questions],
                                         max_new_tokens=max_new_tokens)
        hits = [task.reward(c.text, q.answer).reward for q, c in zip(eval_questions, completions)]
        result["greedy_accuracy"] = sum(hits) / len(hits)
        result["eval_questions"] = len(hits)
    return result
