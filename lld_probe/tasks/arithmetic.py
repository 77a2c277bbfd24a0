"""Synthetic arithmetic questions generated from a seed, with held-out evaluation questions."""

from __future__ import annotations

import hashlib
import random

from .answers import math_reward
from .base import Question, Reward

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


def is_held_out(expression: str) -> bool:
    """A fixed ~30% of all expressions is reserved for evaluation (hash of the expression)."""
    return hashlib.sha256(expression.encode()).digest()[0] < 77


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
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = random.Random(f"{seed}-{self.level}")
        seen, out = set(), []
        for _ in range(200 * max(n, 1)):
            if len(out) == n:
                break
            expression, answer = _operands(self.level, rng)
            if expression in seen or is_held_out(expression) != (split == "eval"):
                continue
            seen.add(expression)
            out.append(self.question(expression, answer))
        return out

    def reward(self, completion: str, answer: str) -> Reward:
        value, parsed = math_reward(completion, answer, mode="last_number")
        return Reward(value, parsed)
