"""Tasks: questions with reference answers and binary rewards."""

from pathlib import Path

from .answers import answers_match, extract_answer, last_number, math_reward
from .arithmetic import ArithmeticTask
from .base import Question, Reward, format_prompt
from .jsonl import JsonlTask, load_questions_jsonl


def get_task(name: str = "arithmetic", *, level: int = 1):
    """"arithmetic" (level 1..3), "arithmetic2"/"arithmetic3" shorthands, or a path to a JSONL file."""
    if name == "arithmetic":
        return ArithmeticTask(level)
    if name in ("arithmetic1", "arithmetic2", "arithmetic3"):
        return ArithmeticTask(int(name[-1]))
    if Path(name).suffix == ".jsonl" or Path(name).is_file():
        return JsonlTask(name)
    raise ValueError(f"task must be 'arithmetic', 'arithmetic2', 'arithmetic3' or a JSONL path, got {name!r}")


__all__ = ["ArithmeticTask", "JsonlTask", "Question", "Reward", "answers_match", "extract_answer",
           "format_prompt", "get_task", "last_number", "load_questions_jsonl", "math_reward"]
