"""A small offline word-problem set in the two benchmark formats, written from templates:
data/word_problems/gsm8k_style.jsonl (question, answer ending in "#### N") and
data/word_problems/math_style.jsonl (problem, solution with \\boxed{}).

    python -m lld_probe.tasks.word_problems        # regenerate (deterministic)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORD_PROBLEMS_DIR = Path(__file__).resolve().parents[2] / "data" / "word_problems"
NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack"]
ITEMS = ["apples", "stickers", "marbles", "books", "pencils", "cookies", "stamps", "shells"]


def gsm8k_record(rng: random.Random) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c, k = rng.randint(5, 40), rng.randint(2, 20), rng.randint(1, 9), rng.randint(2, 4)
    kind = rng.randrange(3)
    if kind == 0:
        total = a + b - c
        question = f"{name} has {a} {item}. {name} buys {b} more and gives {c} away. How many {item} does {name} have now?"
        steps = f"After buying, {name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item}.\n" \
                f"After giving {c} away, {name} has {a + b} - {c} = <<{a + b}-{c}={total}>>{total} {item}."
    elif kind == 1:
        total = k * a + c
        question = f"A box holds {a} {item}. {name} fills {k} boxes and has {c} {item} left over. How many {item} does {name} have?"
        steps = f"The boxes hold {k} * {a} = <<{k}*{a}={k * a}>>{k * a} {item}.\n" \
                f"With the {c} left over that is {k * a} + {c} = <<{k * a}+{c}={total}>>{total} {item}."
    else:
        cost = rng.randint(2, 9)
        total = 1000 + a * cost * 10
        question = f"{name} sells {a} {item} for ${cost * 10} each and already had $1,000. How many dollars does {name} have now?"
        steps = f"The sale brings {a} * {cost * 10} = <<{a}*{cost * 10}={a * cost * 10}>>{a * cost * 10} dollars.\n" \
                f"In all {name} has 1000 + {a * cost * 10} = <<1000+{a * cost * 10}={total}>>{total} dollars."
    return {"question": question, "answer": f"{steps}\n#### {total:,}"}


def math_record(rng: random.Random) -> dict:
    kind = rng.randrange(3)
    if kind == 0:
        a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 30)
        problem = f"Compute $({a} \\times {b}) + {c}$."
        solution = f"First $ {a} \\times {b} = {a * b}$, then ${a * b} + {c} = {a * b + c}$. So the answer is $\\boxed{{{a * b + c}}}$."
    elif kind == 1:
        a, b = rng.randint(1, 9), rng.randint(2, 9)
        while a % b == 0:
            a = rng.randint(1, 9)
        problem = f"Simplify $\\frac{{{2 * a}}}{{{2 * b}}}$."
        from fractions import Fraction
        value = Fraction(a, b)
        solution = f"Dividing numerator and denominator by 2 gives $\\frac{{{a}}}{{{b}}}$, which is " \
                   f"$\\boxed{{\\frac{{{value.numerator}}}{{{value.denominator}}}}}$."
    else:
        x, a = rng.randint(-9, 9), rng.randint(2, 7)
        b = rng.randint(-20, 20)
        sign = "+" if b >= 0 else "-"
        problem = f"Solve for $x$: ${a}x {sign} {abs(b)} = {a * x + b}$."
        solution = f"Move {b} to the right side: ${a}x = {a * x}$. Divide by {a}: $x = \\boxed{{{x}}}$."
    return {"problem": problem, "solution": solution}


def write_word_problems(out: Path = WORD_PROBLEMS_DIR, n: int = 24, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in (("gsm8k_style", gsm8k_record), ("math_style", math_record)):
        rng = random.Random(f"{name}-{seed}")
        path = out / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as handle:
            for _ in range(n):
                handle.write(json.dumps(make(rng)) + "\n")
        paths[name] = path
    return paths


if __name__ == "__main__":
    for name, path in write_word_problems().items():
        print(f"wrote {path}")
