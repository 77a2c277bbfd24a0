"""The run store of DESIGN.md: one folder per training run, append-only, one Parquet file per step.

    meta.json                          method, settings, model, task, seed, versions, start time
    responses/step=NNNNNN.parquet      one row per sampled response
    tokens/step=NNNNNN.parquet         per-token rows for the responses the probe keeps
    probe_set.parquet                  step, probe_id, kind, logp (fixed probe responses, every k steps)
    scalars.parquet                    step, name, value (every metric the trainer logs)

Every file is written under a temporary name and renamed (store.atomic), so a run killed at any
moment leaves a store that loads; a resumed run truncates what lies after its checkpoint and goes on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .atomic import write_json, write_parquet

RESPONSE_COLUMNS = ["step", "question_id", "group_id", "response_index", "prompt", "completion", "reward",
                    "correct", "advantage", "n_tokens", "logp_before", "logp_after", "selected_fraction"]
TOKEN_COLUMNS = ["step", "group_id", "response_index", "token_id", "position", "logp_before", "logp_after",
                 "nthr_score", "selected", "entropy"]
PROBE_SET_COLUMNS = ["step", "probe_id", "kind", "question_id", "n_tokens", "logp"]
SCALAR_COLUMNS = ["step", "name", "value"]
STEP_FILE = re.compile(r"^step=(\d{6,})\.parquet$")


def step_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step={step:06d}.parquet"


def is_run_store(path) -> bool:
    path = Path(path)
    return (path / "meta.json").is_file() and (path / "responses").is_dir()


class RunStoreWriter:
    """Writes one run's store. Appending a step twice overwrites that step (a resumed run redoes it)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._scalars = self._read_or_empty("scalars.parquet", SCALAR_COLUMNS)
        self._probe_set = self._read_or_empty("probe_set.parquet", PROBE_SET_COLUMNS)

    def _read_or_empty(self, name, columns) -> pd.DataFrame:
        file = self.path / name
        return pd.read_parquet(file) if file.is_file() else pd.DataFrame(columns=columns)

    def write_meta(self, meta: dict) -> None:
        existing = self.path / "meta.json"
        if existing.is_file():   # a resumed run keeps the original start and records the restart
            previous = json.loads(existing.read_text())
            meta = {**previous, **meta, "start_time": previous.get("start_time", meta.get("start_time")),
                    "restarts": previous.get("restarts", 0) + 1}
        write_json(meta, existing)

    def write_step(self, step: int, responses: pd.DataFrame, tokens: pd.DataFrame | None = None) -> None:
        missing = [c for c in RESPONSE_COLUMNS if c not in responses.columns]
        if missing:
            raise ValueError(f"responses for step {step} lack columns {missing}")
        # tokens first: a step whose responses file exists is complete
        if tokens is not None and len(tokens):
            write_parquet(tokens, step_path(self.path / "tokens", step))
        write_parquet(responses, step_path(self.path / "responses", step))

    def append_scalars(self, step: int, values: dict) -> None:
        """One row per numeric value; a (step, name) logged twice keeps the last value."""
        rows = pd.DataFrame([{"step": int(step), "name": str(k), "value": float(v)} for k, v in values.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"],
                            columns=SCALAR_COLUMNS)
        if len(rows):
            merged = rows if self._scalars.empty else pd.concat([self._scalars, rows], ignore_index=True)
            self._scalars = merged.drop_duplicates(["step", "name"], keep="last").reset_index(drop=True)
            write_parquet(self._scalars, self.path / "scalars.parquet")

    def append_probe_set(self, rows: pd.DataFrame) -> None:
        self._probe_set = rows if self._probe_set.empty else pd.concat([self._probe_set, rows], ignore_index=True)
        write_parquet(self._probe_set, self.path / "probe_set.parquet")

    def has_probe_rows(self) -> bool:
        return not self._probe_set.empty

    def truncate_after(self, step: int) -> None:
        """Drop everything recorded after `step` (resuming from a checkpoint at that step)."""
        for folder in ("responses", "tokens"):
            for file in (self.path / folder).glob("step=*.parquet"):
                match = STEP_FILE.match(file.name)
                if match and int(match.group(1)) > step:
                    file.unlink()
        if not self._scalars.empty:
            self._scalars = self._scalars[self._scalars["step"] <= step]
            write_parquet(self._scalars, self.path / "scalars.parquet")
        if not self._probe_set.empty:
            self._probe_set = self._probe_set[self._probe_set["step"] <= step]
            write_parquet(self._probe_set, self.path / "probe_set.parquet")


@dataclass
class RunStore:
    meta: dict
    responses: pd.DataFrame
    tokens: pd.DataFrame
    probe_set: pd.DataFrame
    scalars: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def read_parquet_files(files, warnings: list[str]) -> list[pd.DataFrame]:
    """Read step files in order. An unreadable file raises naming it, except the last one (a live
    run may be writing it), which is skipped with a message appended to `warnings`."""
    files = list(files)
    frames = []
    for index, file in enumerate(files):
        try:
            frames.append(pd.read_parquet(file))
        except Exception as error:
            if index == len(files) - 1:
                warnings.append(f"{file}: unreadable last step skipped ({error})")
                continue
            raise ValueError(f"{file}: not a readable Parquet file ({error})") from error
    return frames


def _read_steps(folder: Path, columns: list[str], warnings: list[str]) -> pd.DataFrame:
    files = sorted(f for f in folder.glob("step=*.parquet") if STEP_FILE.match(f.name)) if folder.is_dir() else []
    frames = read_parquet_files(files, warnings)
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def read_run_store(path) -> RunStore:
    """Load a run store; a missing meta.json or a corrupt step file (other than the last) raises."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path}: not a run store (no meta.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta_file}: line {error.lineno}: malformed JSON ({error.msg})") from error
    warnings: list[str] = []
    responses = _read_steps(path / "responses", RESPONSE_COLUMNS, warnings)
    missing = [c for c in RESPONSE_COLUMNS if c not in responses.columns]
    if missing:
        raise ValueError(f"{path / 'responses'}: missing columns {missing}")
    tokens = _read_steps(path / "tokens", TOKEN_COLUMNS, warnings)
    if len(responses):   # tokens of a step whose responses file never landed are not part of the run
        tokens = tokens[tokens["step"].isin(set(responses["step"]))]
    frames = {}
    for name, columns in (("probe_set", PROBE_SET_COLUMNS), ("scalars", SCALAR_COLUMNS)):
        file = path / f"{name}.parquet"
        frames[name] = pd.read_parquet(file) if file.is_file() else pd.DataFrame(columns=columns)
    return RunStore(meta, responses.reset_index(drop=True), tokens.reset_index(drop=True), frames["probe_set"],
                    frames["scalars"], warnings)
