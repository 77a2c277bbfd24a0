"""`load(path)` -> Run: one entry point for every log this toolkit reads, without loading a model.

Sources (detected from what the path holds):
- "store":    our run store (meta.json + responses/step=*.parquet), written by LLDGRPOTrainer;
- "protocol": our per-question protocol folder (protocol.parquet, responses.parquet, ...);
- "trl":      a TRL GRPOTrainer output_dir (completions/completions_NNNNN.parquet from
              log_completions=True, trainer_state.json for the scalars);
- "verl":     a folder of verl rollout dumps {step}.jsonl with input, output, score (gts, acc, ...).
Every Run.responses has step, group_id, prompt, completion, reward, correct, advantage (recomputed
with the group convention when the log has none), plus whatever else the source has.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..core import group_advantages
from ..store.run_store import is_run_store, read_run_store

REQUIRED = ["step", "group_id", "prompt", "completion", "reward", "correct", "advantage"]


@dataclass
class Run:
    kind: str
    path: Path
    responses: pd.DataFrame
    meta: dict = field(default_factory=dict)
    scalars: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["step", "name", "value"]))
    tokens: pd.DataFrame = field(default_factory=pd.DataFrame)
    probe_set: pd.DataFrame = field(default_factory=pd.DataFrame)
    extra: dict = field(default_factory=dict)        # source-specific tables (protocol: per-variant rows)
    warnings: list = field(default_factory=list)

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


def group_advantages_frame(responses: pd.DataFrame, *, std: str = "sample", eps: float = 1e-4) -> pd.Series:
    """lld_probe.core.group_advantages per group_id (PAPER: advantage; groups may differ in size);
    a response alone in its group gets 0."""
    advantages = pd.Series(0.0, index=responses.index)
    for rows in responses.groupby("group_id", sort=False).groups.values():
        if len(rows) > 1:
            rewards = torch.tensor(responses.loc[rows, "reward"].to_numpy(dtype=float))
            advantages.loc[rows] = group_advantages(rewards, len(rows), std=std, eps=eps).numpy()
    return advantages


def assign_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """group_id and response_index for one step's rows: a group is the responses to one prompt, in
    the order the log holds them (TRL and verl log a generation batch in sampler order)."""
    order = {prompt: i for i, prompt in enumerate(dict.fromkeys(frame["prompt"]))}
    frame["group_id"] = frame["step"].astype(str) + ":" + frame["prompt"].map(order).astype(str)
    frame["response_index"] = frame.groupby("group_id").cumcount()
    return frame


def step_jsonl_files(path: Path) -> list[Path]:
    """The {step}.jsonl files of a verl dump folder, by step."""
    return sorted((f for f in path.glob("*.jsonl") if re.fullmatch(r"\d+", f.stem)), key=lambda f: int(f.stem))


def correctness_column(reward: pd.Series, threshold: float | None) -> pd.Series:
    """Binary rewards -> bool; with a threshold, reward >= threshold; otherwise NA (stats that need
    correctness then refuse with a clear error)."""
    if threshold is not None:
        return reward >= threshold
    if reward.isin([0.0, 1.0]).all():
        return reward == 1.0
    return pd.Series(pd.NA, index=reward.index, dtype="boolean")


def _finish(run: Run, threshold: float | None) -> Run:
    responses = run.responses
    if "correct" not in responses.columns or threshold is not None:
        responses["correct"] = correctness_column(responses["reward"].astype(float), threshold)
    if "advantage" not in responses.columns:
        responses["advantage"] = group_advantages_frame(responses)
    if responses["correct"].isna().any():
        run.warnings.append("rewards are not binary: `correct` is NA (pass correct_threshold= to load(), or --correct-threshold)")
    missing = [c for c in REQUIRED if c not in responses.columns]
    if missing:
        raise ValueError(f"{run.path}: the {run.kind} reader produced no columns {missing}")
    for message in run.warnings:
        warnings.warn(f"{run.path}: {message}", stacklevel=3)
    return run


def load(path, *, correct_threshold: float | None = None) -> Run:
    """Load a run from any supported source (see module doc); correct_threshold turns non-binary
    rewards into correct/incorrect."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if is_run_store(path):
        run = _load_store(path)
    elif (path / "protocol.parquet").is_file():
        run = _load_protocol(path)
    elif (path / "completions").is_dir() or (path / "trainer_state.json").is_file() or \
            any(path.glob("checkpoint-*/trainer_state.json")):
        from .read_trl import read_trl_output
        run = read_trl_output(path)
    elif step_jsonl_files(path):
        from .read_verl import read_verl_dumps
        run = read_verl_dumps(path)
    else:
        raise ValueError(f"{path}: not a run store, protocol folder, TRL output_dir (completions/ or "
                         f"trainer_state.json) or verl dump folder ({{step}}.jsonl files)")
    return _finish(run, correct_threshold)


def _load_store(path: Path) -> Run:
    store = read_run_store(path)
    return Run("store", path, store.responses.copy(), store.meta, store.scalars, store.tokens, store.probe_set,
               warnings=list(store.warnings))


def _load_protocol(path: Path) -> Run:
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    tables = {}
    for name in ("protocol", "responses", "tokens", "questions"):
        file = path / f"{name}.parquet"
        try:
            tables[name] = pd.read_parquet(file) if file.is_file() else pd.DataFrame()
        except Exception as error:
            raise ValueError(f"{file}: not a readable Parquet file ({error})") from error
    responses = tables["responses"].copy()
    if len(responses):
        responses.insert(0, "step", 0)
        # one group per (question, variant): every variant updates the same sampled group
        responses.insert(1, "group_id", responses["question_id"].astype(str) + "|" + responses["variant"].astype(str))
        responses["prompt"] = responses["question_id"].astype(str)
    else:
        responses = pd.DataFrame(columns=REQUIRED)
    meta = {"method": "protocol", **meta}
    return Run("protocol", path, responses, meta, tokens=tables["tokens"],
               extra={"protocol": tables["protocol"], "questions": tables["questions"]})


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
