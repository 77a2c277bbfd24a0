"""The Run record every reader produces, and the helpers the readers share (no reader imports another)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..store.schema import SCALAR_COLUMNS, group_id


@dataclass
class Run:
    kind: str
    path: Path
    responses: pd.DataFrame
    meta: dict = field(default_factory=dict)
    scalars: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SCALAR_COLUMNS))
    tokens: pd.DataFrame = field(default_factory=pd.DataFrame)
    probe_set: pd.DataFrame = field(default_factory=pd.DataFrame)
    extra: dict = field(default_factory=dict)        # source-specific tables (protocol: per-method rows)
    warnings: list = field(default_factory=list)
    skipped_steps: dict = field(default_factory=dict)  # logged step -> why the reader left it out

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name

    @property
    def method(self) -> str:
        return self.meta.get("method", self.kind)

    def scalar(self, name: str) -> pd.DataFrame:
        """step, value of one logged scalar."""
        frame = self.scalars[self.scalars["name"] == name]
        return frame[["step", "value"]].sort_values("step").reset_index(drop=True)


def assign_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """group_id and response_index for one step's rows: a group is the responses to one prompt, in
    the order the log holds them (TRL and verl log a generation batch in sampler order)."""
    order = {prompt: i for i, prompt in enumerate(dict.fromkeys(frame["prompt"]))}
    frame["group_id"] = [group_id(step, index) for step, index in zip(frame["step"], frame["prompt"].map(order))]
    frame["response_index"] = frame.groupby("group_id").cumcount()
    return frame


def step_jsonl_files(path: Path) -> list[Path]:
    """The {step}.jsonl files of a verl dump folder, by step."""
    return sorted((f for f in path.glob("*.jsonl") if re.fullmatch(r"\d+", f.stem)), key=lambda f: int(f.stem))


def read_jsonl(file: Path, *, allow_truncated_tail: bool = False) -> tuple[list[dict], bool]:
    """Parse a JSONL file; errors name file and line. With allow_truncated_tail, a broken last line
    (a writer still running) is dropped and reported as (rows, True)."""
    rows = []
    lines = file.read_text(encoding="utf-8", errors="replace").split("\n")
    ends_cleanly = lines[-1] == ""
    if ends_cleanly:
        lines = lines[:-1]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if allow_truncated_tail and number == len(lines) and not ends_cleanly:
                return rows, True
            raise ValueError(f"{file}:{number}: malformed JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise ValueError(f"{file}:{number}: expected a JSON object, got {type(record).__name__}")
        rows.append(record)
    return rows, False


def numeric_reward(values, file, what: str = "reward") -> np.ndarray:
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{file}: {what} column is not numeric ({error})") from error
