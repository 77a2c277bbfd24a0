"""Users' own questions from a JSONL file: one {"prompt": ..., "answer": ...} object a line."""

from __future__ import annotations

import json
from pathlib import Path

from .answers import math_reward
from .base import Question, Reward


def load_questions_jsonl(path) -> list[Question]:
    """Questions from JSONL with keys prompt and answer (question_id optional: default "line-N").
    Malformed lines raise ValueError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    questions, ids = [], set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in ("prompt", "answer") if key not in record]
            if missing:
                raise ValueError(f"{path}:{number}: missing key(s) {', '.join(missing)}")
            if not isinstance(record["prompt"], str) or not record["prompt"].strip():
                raise ValueError(f"{path}:{number}: prompt must be a non-empty string")
            question_id = str(record.get("question_id", f"line-{number}"))
            if question_id in ids:
                raise ValueError(f"{path}:{number}: duplicate question_id {question_id!r}")
            ids.add(question_id)
            questions.append(Question(question_id, record["prompt"], str(record["answer"])))
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


class JsonlTask:
    """A task over a user's JSONL file, rewarded with the MATH-style final-answer checker."""

    name = "jsonl"

    def __init__(self, path):
        self.path = Path(path)
        self._questions = load_questions_jsonl(self.path)

    def questions(self, n: int, seed: int = 0, *, split: str = "train") -> list[Question]:
        import random
        pool = list(self._questions)
        random.Random(seed).shuffle(pool)
        return pool[:n]

    def reward(self, completion: str, answer: str) -> Reward:
        value, parsed = math_reward(completion, answer)
        return Reward(value, parsed)
