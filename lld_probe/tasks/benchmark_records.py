"""Benchmark records (GSM8K, MATH and look-alikes) -> questions with a reference final answer.

GSM8K: `question`, `answer` ending in "#### N" (the reference is N).
MATH: `problem`, `solution` with the reference in its last \\boxed{...}.
The prompt asks for the final answer in \\boxed{}; completions are scored by the MATH-style answer
checker (lld_probe.tasks.answers)."""

from __future__ import annotations

from .answers import _boxed_contents
from .base import Question

ANSWER_FORMATS = ("gsm8k", "math", "plain")
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def reference_answer(text, answer_format: str, where: str, column: str) -> str:
    """The final answer inside a reference: after "####" (gsm8k), the last \\boxed{} (math), or the
    whole text (plain). `where` ("file.jsonl:3") and `column` name the cell in errors."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if text is None or not str(text).strip():
        raise ValueError(f"{where}: column {column!r} is empty")
    text = str(text)
    if answer_format == "gsm8k":
        if "####" not in text:
            raise ValueError(f"{where}: column {column!r} has no '#### N' final answer: {text[-60:]!r}")
        answer = text.rsplit("####", 1)[1].strip().replace(",", "")
        if not answer:
            raise ValueError(f"{where}: column {column!r} has nothing after '####'")
        return answer
    if answer_format == "math":
        boxed = _boxed_contents(text)
        if not boxed:
            raise ValueError(f"{where}: column {column!r} has no \\boxed{{...}} final answer: {text[-60:]!r}")
        return boxed[-1].strip()
    return text.strip()


def detect_answer_format(text) -> str:
    """gsm8k when the reference has "####", math when it has \\boxed{}, else plain."""
    text = str(text)
    if "####" in text:
        return "gsm8k"
    if _boxed_contents(text):
        return "math"
    return "plain"


def record_question(record: dict, *, where: str, question_column: str, answer_column: str, answer_format: str,
                    question_id: str) -> Question:
    """One record as a Question; a missing or empty column raises ValueError naming where and the column."""
    for column in (question_column, answer_column):
        if column not in record:
            raise ValueError(f"{where}: missing column {column!r} (has {', '.join(map(repr, record)) or 'none'})")
    text = record[question_column]
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: column {question_column!r} must be a non-empty string")
    answer = reference_answer(record[answer_column], answer_format, where, answer_column)
    return Question(question_id, f"{text.strip()}\n{INSTRUCTION}", answer)
