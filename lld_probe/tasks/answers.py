"""Final-answer extraction and comparison for math-style completions (\\boxed{...}, "Answer: ...",
last number), used by the arithmetic task and for users' real data sets (MATH, GSM8K...)."""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_ANSWER_LINE = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*(.+)", re.IGNORECASE)


def _boxed_contents(text: str) -> list[str]:
    """Contents of every \\boxed{...} / \\fbox{...}, with nested braces."""
    found = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start:pos])
                    break
    return found


def last_number(text: str) -> str | None:
    """The last number in text ("1,234" -> "1234", "-3", "2.5", "3/4"), or None."""
    numbers = [n for n in _NUMBER.findall(text) if any(ch.isdigit() for ch in n)]
    if not numbers:
        return None
    return numbers[-1].replace(",", "").rstrip(".")


def extract_answer(completion: str, *, mode: str = "auto") -> str | None:
    """The final answer of a completion.

    mode "auto": the last \\boxed{...} if any, else the text after the last "Answer:"/"answer is",
    else the last number. "boxed" / "last_number" use only that rule.
    """
    if mode not in ("auto", "boxed", "last_number"):
        raise ValueError(f"mode must be 'auto', 'boxed' or 'last_number', got {mode!r}")
    if mode in ("auto", "boxed"):
        boxed = _boxed_contents(completion)
        if boxed:
            return boxed[-1].strip()
        if mode == "boxed":
            return None
    if mode == "auto":
        lines = _ANSWER_LINE.findall(completion)
        if lines:
            candidate = lines[-1].strip().rstrip(".!;,").strip().strip("$").strip()
            if candidate:
                return candidate
    return last_number(completion)


def _as_number(text: str) -> Fraction | None:
    cleaned = text.strip().strip("$").strip().rstrip(".!;,").replace(",", "").replace(" ", "")
    frac = re.fullmatch(r"(-?)\\d?frac\{(-?\d+)\}\{(\d+)\}", cleaned)
    if frac:
        sign = -1 if frac.group(1) else 1
        return sign * Fraction(int(frac.group(2)), int(frac.group(3)))
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def normalize_answer(text: str) -> str:
    """Light normalisation for string comparison: no spaces, $, trailing punctuation or \\text{}."""
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    text = text.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("dfrac", "frac")
    return text.strip().strip("$").rstrip(".!;,").replace(" ", "").lower()


def answers_match(predicted: str | None, reference: str) -> bool:
    """Numeric equality when both sides parse as numbers (1,000 = 1000, 0.5 = 1/2 = \\frac{1}{2}),
    else equality of the normalised strings."""
    if predicted is None:
        return False
    left, right = _as_number(predicted), _as_number(str(reference))
    if left is not None and right is not None:
        return left == right
    return normalize_answer(predicted) == normalize_answer(str(reference))


def math_reward(completion: str, answer: str, *, mode: str = "auto") -> tuple[float, str | None]:
    """(1.0 if the completion's final answer equals `answer` else 0.0, the parsed answer)."""
    parsed = extract_answer(completion, mode=mode)
    return (1.0 if answers_match(parsed, answer) else 0.0), parsed
