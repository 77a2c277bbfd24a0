"""Tasks: questions with reference answers and binary rewards."""

from pathlib import Path

from .answers import answers_match, extract_answer, last_number, math_reward
from .arithmetic import ArithmeticTask
from .base import Question, Reward, format_prompt
from .benchmark_jsonl import BenchmarkTask, jsonl_layout, read_benchmark_jsonl
from .chain import ChainTask
from .hf_dataset import hf_task_name, load_hf_task
from .jsonl import JsonlTask, load_questions_jsonl


def _first_record(path: Path):
    """The first non-empty line of a JSONL file as parsed JSON (None when empty or not JSON)."""
    import json
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
    return None


def get_task(name: str = "arithmetic", *, level: int = 1):
    """"arithmetic" (level 1..3), "arithmetic2"/"arithmetic3" shorthands, "chain" (3-step chains;
    "chainN": N steps), a JSONL file (prompt/answer, GSM8K question/answer "#### N", or MATH
    problem/solution with \\boxed{}), or "hf:PATH_OR_NAME?split=...&question=...&answer=..." (a
    `datasets` data set, lld_probe.tasks.hf_dataset)."""
    if name == "arithmetic":
        return ArithmeticTask(level)
    if name in ("arithmetic1", "arithmetic2", "arithmetic3"):
        return ArithmeticTask(int(name[-1]))
    if name == "chain" or (name.startswith("chain") and name[5:].isdigit()):
        return ChainTask(int(name[5:]) if name[5:] else 3)
    if name.startswith("hf:"):
        return load_hf_task(name)
    if Path(name).suffix == ".jsonl" or Path(name).is_file():
        first = _first_record(Path(name)) if Path(name).is_file() else None
        if isinstance(first, dict) and jsonl_layout(first) is not None:
            return BenchmarkTask(read_benchmark_jsonl(name), name)
        return JsonlTask(name)
    raise ValueError(f"task must be 'arithmetic', 'arithmetic2', 'arithmetic3', 'chain', a JSONL path or "
                     f"'hf:PATH_OR_NAME?split=...', got {name!r}")


__all__ = ["ArithmeticTask", "BenchmarkTask", "ChainTask", "JsonlTask", "Question", "Reward", "answers_match",
           "extract_answer", "format_prompt", "get_task", "hf_task_name", "last_number", "load_hf_task",
           "load_questions_jsonl", "math_reward", "read_benchmark_jsonl"]
