"""Multi-step arithmetic chains: a start value and a few operations, solved step by step in writing
with the final answer last ("3+4=7, 7*2=14, 14-5=9. The answer is 9."). Correct and incorrect
solutions share most of their text (the format, the early steps), which is where Lazy Likelihood
Displacement lives (PAPER: LLD needs tokens shared between correct and incorrect responses)."""

from __future__ import annotations

import hashlib
import random

from .answers import math_reward
from .base import Question, Reward
from .splits import distinct_questions

OPERATIONS = {"+": "plus", "-": "minus", "*": "times"}
MAX_VALUE = 99          # every intermediate value stays in 0..MAX_VALUE


def _apply(value: int, op: str, operand: int) -> int:
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"op must be one of {sorted(OPERATIONS)}, got {op!r}")


def chain_steps(start: int, operations) -> list[tuple[int, str, int, int]]:
    """(left, op, operand, result) for each operation applied in order from start."""
    steps, value = [], start
    for op, operand in operations:
        result = _apply(value, op, operand)
        steps.append((value, op, operand, result))
        value = result
    return steps


# ways of writing the same solution: correct responses differ from each other as real reasoning does,
# while a mistaken one shares its style's text with the correct ones up to the mistake
STYLES = (
    lambda steps: ", ".join(f"{a}{op}{b}={c}" for a, op, b, c in steps) + ".",
    lambda steps: ", ".join(f"{a} {op} {b} = {c}" for a, op, b, c in steps) + ".",
    lambda steps: f"From {steps[0][0]}: " + " ".join(f"{a}{op}{b} is {c}." for a, op, b, c in steps)[:-1] + ".",
    lambda steps: ", ".join(f"{a} {OPERATIONS[op]} {b} is {c}" for a, op, b, c in steps) + ".",
)


def write_solution(steps, style: int = 0) -> str:
    """The worked solution of a chain in one of the STYLES, final answer last:
    style 0 " 3+4=7, 7*2=14, 14-5=9. The answer is 9." """
    if not 0 <= style < len(STYLES):
        raise ValueError(f"style must be in 0..{len(STYLES) - 1}, got {style!r}")
    return f" {STYLES[style](steps)} The answer is {steps[-1][3]}."


def random_chain(rng: random.Random, n_steps: int) -> tuple[int, list[tuple[str, int]]]:
    """A start value 1..9 and n_steps operations whose every intermediate value lies in 0..MAX_VALUE."""
    while True:
        start, value, operations = rng.randint(1, 9), None, []
        value = start
        for _ in range(n_steps):
            op = rng.choice(sorted(OPERATIONS))
            operand = rng.randint(2, 3) if op == "*" else rng.randint(1, 9)
            if op == "*" and value * operand > MAX_VALUE or op == "-" and value - operand < 0:
                op, operand = "+", rng.randint(1, 9)
            value = _apply(value, op, operand)
            operations.append((op, operand))
        if value <= MAX_VALUE:
            return start, operations


def chain_text(start: int, operations) -> str:
    """The question's compact form "3 +4 *2 -5" (also its id)."""
    return " ".join([str(start)] + [f"{op}{operand}" for op, operand in operations])


def is_held_out(text: str) -> bool:
    """A fixed ~30% of all chains is reserved for evaluation (hash of the chain)."""
    return hashlib.sha256(f"chain|{text}".encode()).digest()[0] < 77


class ChainTask:
    """Questions "Start at 3, then +4 *2 -5. Solve step by step." with the reward on the final answer
    (the number after the last "answer is", else the last number)."""

    name = "chain"

    def __init__(self, steps: int = 3):
        if not 1 <= steps <= 6:
            raise ValueError(f"steps must be between 1 and 6, got {steps!r}")
        self.steps = steps

    def question(self, start: int, operations) -> Question:
        text = chain_text(start, operations)
        answer = chain_steps(start, operations)[-1][3]
        ops = " ".join(text.split(" ")[1:])
        return Question(question_id=f"C{self.steps}:{text}", prompt=f"Start at {start}, then {ops}. Solve step by step.",
                        answer=str(answer))

    def parse(self, question: Question) -> tuple[int, list[tuple[str, int]]]:
        """(start, operations) back from a question of this task."""
        start, *ops = question.question_id.split(":", 1)[1].split(" ")
        return int(start), [(op[0], int(op[1:])) for op in ops]

    def solution(self, question: Question, style: int = 0) -> str:
        return write_solution(chain_steps(*self.parse(question)), style)

    def questions(self, n: int, seed: int = 0, *, split: str = "train") -> list[Question]:
        """n distinct questions of the split ("train" or "eval"), deterministic in seed."""
        rng = random.Random(f"chain-{seed}-{self.steps}")

        def draw():
            start, operations = random_chain(rng, self.steps)
            return chain_text(start, operations), self.question(start, operations)
        return distinct_questions(n, split, draw, held_out=is_held_out)

    def reward(self, completion: str, answer: str) -> Reward:
        value, parsed = math_reward(completion, answer, mode="auto")
        return Reward(value, parsed)
