"""Synthetic arithmetic questions generated from a seed, with held-out evaluation questions."""

from __future__ import annotations

import random

from .answers import math_reward
from .base import Question, Reward
from .splits import distinct_questions, is_held_out  # noqa: F401  (is_held_out: re-exported)

LEVELS = {1: "single-digit addition", 2: "two-digit addition", 3: "two-step expression"}
INSTRUCTION = "Answer with a number."


def _operands(level: int, rng: random.Random):
    if level == 1:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"{a} + {b}", a + b
    if level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"{a} + {b}", a + b
    a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 0.5:
        return f"{a} + {b} * {c}", a + b * c
    return f"({a} + {b}) - {c}", a + b - c


class ArithmeticTask:
    """Questions "What is 3 + 4? Answer with a number." with the answer checked on the last number."""

    name = "arithmetic"

    def __init__(self, level: int = 1):
        if level not in LEVELS:
            raise ValueError(f"level must be one of {sorted(LEVELS)}, got {level!r}")
        self.level = level

    def question(self, expression: str, answer: int) -> Question:
        return Question(question_id=f"L{self.level}:{expression}",
                        prompt=f"What is {expression}? {INSTRUCTION}", answer=str(answer))

    def questions(self, n: int, seed: int = 0, *, split: str = "train") -> list[Question]:
        """n distinct questions of the split ("train" or "eval"), deterministic in seed; fewer when
        the split has fewer distinct questions (level 1 has 100 in all)."""
        rng = random.Random(f"{seed}-{self.level}")

        def draw():
            expression, answer = _operands(self.level, rng)
            return expression, self.question(expression, answer)
        return distinct_questions(n, split, draw)

    def reward(self, completion: str, answer: str) -> Reward:
        value, parsed = math_reward(completion, answer, mode="last_number")
        return Reward(value, parsed)
