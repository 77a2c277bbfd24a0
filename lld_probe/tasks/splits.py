"""Held-out splits of generated and file-based tasks: a fixed ~30% of all questions, by a hash of their
text, so a question is in the same split whatever the seed or the order."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "eval")


def is_held_out(text: str) -> bool:
    """A fixed ~30% of all questions is reserved for evaluation (hash of the question's text)."""
    return hashlib.sha256(text.encode()).digest()[0] < 77


def distinct_questions(n: int, split: str, draw, held_out=is_held_out) -> list:
    """n distinct questions of the split from draw() -> (text, question), called at most 200 n times;
    fewer when the split has fewer distinct questions. held_out(text) decides the split."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seen, out = set(), []
    for _ in range(200 * max(n, 1)):
        if len(out) == n:
            break
        text, question = draw()
        if text in seen or held_out(text) != (split == "eval"):
            continue
        seen.add(text)
        out.append(question)
    return out
