"""Users' own questions from a JSONL file: one {"prompt": ..., "answer": ...} object a line, with an
optional "split" ("train" / "eval") per line; without one, a fixed ~30% of the questions (by a hash of the
prompt, like the arithmetic task) is held out for evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from .answers import math_reward
from .splits import SPLITS, is_held_out
from .base import Question, Reward


def json_lines(path: Path):
    """(line number, object) for every non-blank line of a question file; a line that is not a JSON object
    raises ValueError naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
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
            yield number, record


def load_questions_jsonl(path, *, with_splits: bool = False):
    """Questions from JSONL with keys prompt and answer (question_id optional: default "line-N"; split
    optional). Malformed lines raise ValueError naming the file and line. with_splits: also the split of
    each question (None where the file gives none)."""
    path = Path(path)
    questions, splits, ids = [], [], set()
    for number, record in json_lines(path):
        missing = [key for key in ("prompt", "answer") if key not in record]
        if missing:
            raise ValueError(f"{path}:{number}: missing key(s) {', '.join(missing)}")
        if not isinstance(record["prompt"], str) or not record["prompt"].strip():
            raise ValueError(f"{path}:{number}: prompt must be a non-empty string")
        question_id = str(record.get("question_id", f"line-{number}"))
        if question_id in ids:
            raise ValueError(f"{path}:{number}: duplicate question_id {question_id!r}")
        ids.add(question_id)
        split = record.get("split")
        if split is not None and split not in SPLITS:
            raise ValueError(f"{path}:{number}: split must be one of {SPLITS}, got {split!r}")
        splits.append(split)
        questions.append(Question(question_id, record["prompt"], str(record["answer"])))
    if not questions:
        raise ValueError(f"{path}: no questions")
    if any(s is not None for s in splits) and any(s is None for s in splits):
        line = splits.index(None)
        raise ValueError(f"{path}: question {questions[line].question_id!r} has no split while others have one: "
                         f"give every line a split, or none")
    return (questions, splits) if with_splits else questions


class JsonlTask:
    """A task over a user's JSONL file, rewarded with the MATH-style final-answer checker."""

    name = "jsonl"

    def __init__(self, path):
        self.path = Path(path)
        questions, splits = load_questions_jsonl(self.path, with_splits=True)
        explicit = splits[0] is not None
        # the file's own split field, else a hash of the prompt (deterministic, independent of the order)
        self.split_source = "the file's split field" if explicit else "a hash of the prompt (~30% held out)"
        self._splits = {"train": [], "eval": []}
        for question, split in zip(questions, splits):
            held_out = split == "eval" if explicit else is_held_out(question.prompt)
            self._splits["eval" if held_out else "train"].append(question)

    def questions(self, n: int, seed: int = 0, *, split: str = "train") -> list[Question]:
        """n questions of the split ("train" or "eval"), shuffled deterministically by seed; fewer when the
        split has fewer."""
        import random
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        pool = list(self._splits[split])
        random.Random(seed).shuffle(pool)
        return pool[:n]

    def reward(self, completion: str, answer: str) -> Reward:
        value, parsed = math_reward(completion, answer)
        return Reward(value, parsed)
