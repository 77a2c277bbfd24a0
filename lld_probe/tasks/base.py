"""What a task is: questions with reference answers, and a binary reward on completions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    question_id: str
    prompt: str          # the question text, before any chat template
    answer: str


@dataclass(frozen=True)
class Reward:
    reward: float        # 1.0 correct, 0.0 incorrect
    parsed: str | None   # the answer read from the completion


def format_prompt(tokenizer, question_text: str) -> str:
    """The model input for a question: the tokenizer's chat template when it has one (with the
    generation prompt), else the plain "question\\nAnswer:" format the tiny model was trained on."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": question_text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{question_text}\nAnswer:"
