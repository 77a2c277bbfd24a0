"""GSM8K-style (`question`, `answer` with "#### N") and MATH-style (`problem`, `solution` with
\\boxed{}) JSONL files as tasks. Errors name the file, the line and the column."""

from __future__ import annotations

import random
from pathlib import Path

from .answers import math_reward
from .base import Question, Reward
from .benchmark_records import record_question
from .jsonl import json_lines

# format -> (question column, answer column, answer format)
JSONL_LAYOUTS = {"gsm8k": ("question", "answer", "gsm8k"), "math": ("problem", "solution", "math")}


class BenchmarkTask:
    """A fixed list of benchmark questions, rewarded with the MATH-style final-answer checker."""

    def __init__(self, questions: list[Question], name: str):
        if not questions:
            raise ValueError(f"{name}: no questions")
        self._questions = list(questions)
        self.name = name

    def __len__(self) -> int:
        return len(self._questions)

    def questions(self, n: int, seed: int = 0, *, split: str = "train") -> list[Question]:
        """n questions in a seeded order (the split is the file's or data set's own: `split` is ignored)."""
        pool = list(self._questions)
        random.Random(seed).shuffle(pool)
        return pool[:n]

    def reward(self, completion: str, answer: str) -> Reward:
        value, parsed = math_reward(completion, answer)
        return Reward(value, parsed)


def jsonl_layout(record: dict) -> str | None:
    """"math" for problem/solution records, "gsm8k" for question/answer ones, None otherwise."""
    if "problem" in record or "solution" in record:
        return "math"
    if "question" in record:
        return "gsm8k"
    return None


def read_benchmark_jsonl(path, layout: str | None = None) -> list[Question]:
    """Questions from a GSM8K- or MATH-style JSONL file (layout None: from the first record's keys)."""
    path = Path(path)
    if layout is not None and layout not in JSONL_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(JSONL_LAYOUTS)}, got {layout!r}")
    questions = []
    for number, record in json_lines(path):
        layout = layout or jsonl_layout(record)
        if layout is None:
            raise ValueError(f"{path}:{number}: neither GSM8K (question, answer) nor MATH (problem, solution) "
                             f"columns (has {', '.join(map(repr, record))})")
        question_column, answer_column, answer_format = JSONL_LAYOUTS[layout]
        question_id = str(record.get("question_id", record.get("unique_id", f"line-{number}")))
        questions.append(record_question(record, where=f"{path}:{number}", question_column=question_column,
                                         answer_column=answer_column, answer_format=answer_format,
                                         question_id=question_id))
    if not questions:
        raise ValueError(f"{path}: no questions (empty file)")
    return questions
