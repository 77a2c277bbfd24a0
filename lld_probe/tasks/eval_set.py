"""The fixed held-out evaluation set: data/eval_arithmetic.jsonl.

    python -m lld_probe.tasks.eval_set        # regenerate (deterministic)
"""

from __future__ import annotations

import json
from pathlib import Path

from .arithmetic import ArithmeticTask
from .jsonl import load_questions_jsonl

EVAL_PATH = Path(__file__).resolve().parents[2] / "data" / "eval_arithmetic.jsonl"


def write_eval_set(path: Path = EVAL_PATH, level: int = 1, seed: int = 1234) -> int:
    """Every held-out question of the level (level 1: 29 of the 100 single-digit sums)."""
    questions = ArithmeticTask(level).questions(100 if level == 1 else 200, seed=seed, split="eval")
    with open(path, "w", encoding="utf-8") as handle:
        for question in sorted(questions, key=lambda q: q.question_id):
            handle.write(json.dumps({"question_id": question.question_id, "prompt": question.prompt,
                                     "answer": question.answer}) + "\n")
    return len(questions)


def load_eval_set(path: Path = EVAL_PATH):
    return load_questions_jsonl(path)


if __name__ == "__main__":
    print(f"wrote {write_eval_set()} questions to {EVAL_PATH}")
