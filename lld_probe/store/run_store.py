"""The run store (schema in store.schema): append-only, one Parquet file per step and rank.

Every file is written under a temporary name and renamed (store.atomic), so a run killed at any
moment leaves a store that loads; a resumed run truncates what lies after its checkpoint and goes on.
In a run on N processes every rank writes its own shard of each step's responses and tokens; the
main process alone writes meta.json and the scalars' and probe set's per-step files.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .atomic import write_json, write_parquet
from .schema import (OPTIONAL_RESPONSE_COLUMNS, OPTIONAL_TOKEN_COLUMNS, PROBE_SET_COLUMNS, RENAMED_COLUMNS,
                     RESPONSE_COLUMNS, SCALAR_COLUMNS, SCHEMA_VERSION, TOKEN_COLUMNS, parse_step_file, step_path)


def is_run_store(path) -> bool:
    path = Path(path)
    return (path / "meta.json").is_file() and (path / "responses").is_dir()


class RunStoreWriter:
    """Writes one run's store. Appending a step twice overwrites that step (a resumed run redoes it).

    rank: None for a 1-process run (plain step files), else this process's rank (step shards).
    is_main: whether this process writes the run-wide files (meta, scalars, probe set)."""

    def __init__(self, path, *, rank: int | None = None, is_main: bool = True):
        self.path = Path(path)
        self.rank = rank
        self.is_main = is_main
        self.path.mkdir(parents=True, exist_ok=True)

    def has_steps(self) -> bool:
        return any(parse_step_file(f.name) for f in (self.path / "responses").glob("step=*.parquet"))

    def write_meta(self, meta: dict) -> None:
        if not self.is_main:
            return
        existing = self.path / "meta.json"
        if existing.is_file():   # a resumed run keeps the original start and records the restart
            previous = json.loads(existing.read_text())
            meta = {**previous, **meta, "start_time": previous.get("start_time", meta.get("start_time")),
                    "restarts": previous.get("restarts", 0) + 1}
        write_json({**meta, "schema_version": SCHEMA_VERSION}, existing)

    def write_step(self, step: int, responses: pd.DataFrame, tokens: pd.DataFrame | None = None) -> None:
        missing = [c for c in RESPONSE_COLUMNS if c not in responses.columns and c not in OPTIONAL_RESPONSE_COLUMNS]
        if missing:
            raise ValueError(f"responses for step {step} lack columns {missing}")
        # tokens first: a step whose responses file exists is complete
        if tokens is not None and len(tokens):
            write_parquet(tokens, step_path(self.path / "tokens", step, self.rank))
        write_parquet(responses, step_path(self.path / "responses", step, self.rank))

    def append_scalars(self, step: int, values: dict) -> None:
        """One row per numeric value into the step's own file; a (step, name) logged twice keeps the last
        value. Only that step's file is rewritten: appending costs the same at step 10 and at step 100,000."""
        if not self.is_main:
            return
        rows = pd.DataFrame([{"step": int(step), "name": str(k), "value": float(v)} for k, v in values.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"],
                            columns=SCALAR_COLUMNS)
        if len(rows):
            merged = self._append_to_step("scalars", step, rows)
            write_parquet(merged.drop_duplicates(["step", "name"], keep="last").reset_index(drop=True),
                          step_path(self.path / "scalars", step))

    def append_probe_set(self, rows: pd.DataFrame) -> None:
        """The probe set's log-likelihoods at one step (rows of a single step) into that step's file."""
        if not self.is_main or not len(rows):
            return
        steps = set(rows["step"])
        if len(steps) != 1:
            raise ValueError(f"append_probe_set takes the rows of one step, got steps {sorted(steps)}")
        step = int(steps.pop())
        write_parquet(self._append_to_step("probe_set", step, rows), step_path(self.path / "probe_set", step))

    def _append_to_step(self, folder: str, step: int, rows: pd.DataFrame) -> pd.DataFrame:
        file = step_path(self.path / folder, step)
        return pd.concat([pd.read_parquet(file), rows], ignore_index=True) if file.is_file() else rows

    def has_probe_rows(self) -> bool:
        return bool(_step_shards(self.path / "probe_set")) or (self.path / "probe_set.parquet").is_file()

    def truncate_after(self, step: int) -> None:
        """Drop everything recorded after `step` (resuming from a checkpoint at that step); every rank's
        shards go. Only the main process truncates."""
        if not self.is_main:
            return
        for folder in ("responses", "tokens", "scalars", "probe_set"):
            for file in (self.path / folder).glob("step=*.parquet"):
                parsed = parse_step_file(file.name)
                if parsed and parsed[0] > step:
                    file.unlink()
        for name in ("scalars", "probe_set"):          # schema version 1: one file for the whole run
            legacy = self.path / f"{name}.parquet"
            if legacy.is_file():
                frame = pd.read_parquet(legacy)
                write_parquet(frame[frame["step"] <= step], legacy)


@dataclass
class RunStore:
    meta: dict
    responses: pd.DataFrame
    tokens: pd.DataFrame
    probe_set: pd.DataFrame
    scalars: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def read_parquet_files(files, warnings: list[str] | None = None) -> list[pd.DataFrame]:
    """Read files in order. An unreadable file raises naming it; with `warnings` given, an unreadable
    last file (a live run may be writing it) is skipped with a message appended there instead."""
    files = list(files)
    frames = []
    for index, file in enumerate(files):
        try:
            frames.append(pd.read_parquet(file))
        except Exception as error:
            if warnings is not None and index == len(files) - 1:
                warnings.append(f"{file}: unreadable last step skipped ({error})")
                continue
            raise ValueError(f"{file}: not a readable Parquet file ({error})") from error
    return frames


def _step_shards(folder: Path) -> dict[int, list[Path]]:
    """step -> its files (one, or one shard per rank in rank order)."""
    shards: dict[int, list[tuple[int, Path]]] = defaultdict(list)
    if folder.is_dir():
        for file in folder.glob("step=*.parquet"):
            parsed = parse_step_file(file.name)
            if parsed:
                shards[parsed[0]].append((-1 if parsed[1] is None else parsed[1], file))
    return {step: [file for _, file in sorted(files)] for step, files in sorted(shards.items())}


def _read_steps(folder: Path, columns: list[str], world_size: int, warnings: list[str],
                steps: set | None = None) -> pd.DataFrame:
    """Concatenate the step files of a folder in step and rank order. In a multi-process store a step
    with fewer than world_size shards is incomplete: skipped with a warning when it is the last step
    (a run killed while writing it), an error otherwise. `steps` restricts to those steps."""
    shards = _step_shards(folder)
    if steps is not None:
        shards = {s: f for s, f in shards.items() if s in steps}
    last = max(shards) if shards else None
    frames = []
    for step, files in shards.items():
        if world_size > 1 and len(files) < world_size:
            message = f"{folder}: step {step} has {len(files)} of {world_size} rank shards"
            if step == last:
                warnings.append(f"{message}; incomplete last step skipped")
                continue
            raise ValueError(f"{message}: the store is damaged (a rank's files are missing)")
        if step != last:
            frames += read_parquet_files(files)
            continue
        step_frames = []      # the last step may be half written by a live or killed run: all shards or none
        for file in files:
            try:
                step_frames.append(pd.read_parquet(file))
            except Exception as error:
                warnings.append(f"{file}: unreadable last step skipped ({error})")
                step_frames = []
                break
        frames += step_frames
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def _current_names(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame of an older store with its columns under their current names (schema.RENAMED_COLUMNS)."""
    renames = {old: new for old, new in RENAMED_COLUMNS.items() if old in frame.columns and new not in frame.columns}
    return frame.rename(columns=renames) if renames else frame


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
    world_size = int(meta.get("world_size", 1))
    warnings: list[str] = []
    responses = _current_names(_read_steps(path / "responses", RESPONSE_COLUMNS, world_size, warnings))
    for column, value in OPTIONAL_RESPONSE_COLUMNS.items():
        if column not in responses.columns:
            responses[column] = value
    missing = [c for c in RESPONSE_COLUMNS if c not in responses.columns]
    if missing:
        raise ValueError(f"{path / 'responses'}: missing columns {missing}")
    # tokens of a step whose responses never landed are not part of the run
    tokens = _current_names(_read_steps(path / "tokens", TOKEN_COLUMNS, world_size, warnings,
                                        steps=set(responses["step"]) if len(responses) else set()))
    for column, value in OPTIONAL_TOKEN_COLUMNS.items():
        if column not in tokens.columns:
            tokens[column] = value
        elif tokens[column].isna().any():     # a resumed store: steps written before the column have none
            tokens[column] = tokens[column].astype(object).fillna(value).astype(type(value))
    frames = {}
    for name, columns in (("probe_set", PROBE_SET_COLUMNS), ("scalars", SCALAR_COLUMNS)):
        legacy = path / f"{name}.parquet"         # schema version 1
        frames[name] = (pd.read_parquet(legacy) if legacy.is_file()
                        else _read_steps(path / name, columns, 1, warnings).reset_index(drop=True))
    return RunStore(meta, responses.reset_index(drop=True), tokens.reset_index(drop=True), frames["probe_set"],
                    frames["scalars"], warnings)
