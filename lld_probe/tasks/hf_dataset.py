"""A Hugging Face `datasets` data set as a task: a folder written by `save_to_disk` or a hub name.

The task name carries every setting, so that it is recorded whole in a protocol's meta.json:

    hf:openai/gsm8k?config=main&split=test&question=question&answer=answer
    hf:/data/math500?split=test&question=problem&answer=solution

Settings: split (default "test"), config (hub data sets with several), question and answer (column
names, default "question" / "answer"), format (gsm8k | math | plain; default: from the first answer,
"####" -> gsm8k, \\boxed{} -> math, else plain)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from .benchmark_jsonl import BenchmarkTask
from .benchmark_records import ANSWER_FORMATS, detect_answer_format, record_question

PREFIX = "hf:"
SETTINGS = ("split", "config", "question", "answer", "format")


def hf_task_name(source: str, *, split: str = "test", config: str | None = None, question: str = "question",
                 answer: str = "answer", answer_format: str | None = None) -> str:
    """The task name of a data set with these settings (what `--task hf:... --split ...` builds)."""
    settings = {"split": split, "config": config, "question": question, "answer": answer, "format": answer_format}
    query = urlencode({key: value for key, value in settings.items() if value is not None})
    return f"{PREFIX}{source}?{query}"


def parse_hf_task_name(name: str) -> tuple[str, dict]:
    """(source, settings) of "hf:SOURCE?key=value&..."; unknown keys raise ValueError naming them."""
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise ValueError(f"a data set task is 'hf:PATH_OR_NAME[?split=...&question=...&answer=...]', got {name!r}")
    source, _, query = name[len(PREFIX):].partition("?")
    settings = {"split": "test", "config": None, "question": "question", "answer": "answer", "format": None}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in SETTINGS:
            raise ValueError(f"{name}: unknown setting {key!r} (known: {', '.join(SETTINGS)})")
        settings[key] = value
    if settings["format"] is not None and settings["format"] not in ANSWER_FORMATS:
        raise ValueError(f"{name}: format must be one of {ANSWER_FORMATS}, got {settings['format']!r}")
    return source, settings


def load_rows(source: str, split: str, config: str | None):
    """The rows of one split: from a save_to_disk folder when `source` is a local path, else the hub."""
    import datasets

    if Path(source).exists():
        try:
            data = datasets.load_from_disk(source)
        except FileNotFoundError as error:
            raise ValueError(f"{source}: not a folder written by datasets' save_to_disk ({error})") from None
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"{source}: no split {split!r} (splits: {', '.join(data)})")
            data = data[split]
        return data
    try:
        return datasets.load_dataset(source, config, split=split)
    except Exception as error:      # the hub's errors are many kinds; one line that names the source
        raise ValueError(f"could not load data set {source!r} (config {config}, split {split!r}): "
                         f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def load_hf_task(name: str) -> BenchmarkTask:
    source, settings = parse_hf_task_name(name)
    rows = load_rows(source, settings["split"], settings["config"])
    where = f"{source} (split {settings['split']!r})"
    for column in (settings["question"], settings["answer"]):
        if column not in rows.column_names:
            raise ValueError(f"{where}: missing column {column!r} (columns: {', '.join(rows.column_names)})")
    if len(rows) == 0:
        raise ValueError(f"{where}: no rows")
    answer_format = settings["format"] or detect_answer_format(rows[0][settings["answer"]])
    questions = [record_question(record, where=f"{where} row {index}", question_column=settings["question"],
                                 answer_column=settings["answer"], answer_format=answer_format,
                                 question_id=f"{settings['split']}-{index}")
                 for index, record in enumerate(rows)]
    return BenchmarkTask(questions, name)
