"""Reader for a TRL GRPOTrainer output_dir: completions/completions_NNNNN.parquet (written with
log_completions=True: step, prompt, completion, one column per reward function, advantage) and
trainer_state.json (log_history -> scalars)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..store.run_store import read_parquet_files
from .pickled_state import read_pickled_attributes
from .run import Run, assign_groups, numeric_reward

NON_REWARD = {"step", "prompt", "completion", "advantage", "image", "images"}


def _trainer_state(path: Path) -> Path | None:
    direct = path / "trainer_state.json"
    if direct.is_file():
        return direct
    checkpoints = sorted(path.glob("checkpoint-*/trainer_state.json"),
                         key=lambda f: int(re.sub(r"\D", "", f.parent.name) or 0))
    return checkpoints[-1] if checkpoints else None


def read_scalars(state_file: Path) -> pd.DataFrame:
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{state_file}:{error.lineno}: malformed JSON ({error.msg})") from error
    rows = []
    for entry in state.get("log_history", []):
        step = entry.get("step")
        for name, value in entry.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"step": int(step), "name": name, "value": float(value)})
    return pd.DataFrame(rows, columns=["step", "name", "value"])


def message_text(value) -> str:
    """Conversational prompts/completions (lists of messages) -> their text."""
    if isinstance(value, str):
        return value
    try:
        return "\n".join(str(m["content"]) for m in value)
    except (TypeError, KeyError, IndexError):
        return str(value)


def training_reward_weights(path: Path) -> list | None:
    """reward_weights of the run's GRPOConfig, from the training_args.bin TRL saves with its checkpoints
    (the output_dir's own, else the newest checkpoint's); None when no file is there or it sets none."""
    files = [path / "training_args.bin"] + sorted(path.glob("checkpoint-*/training_args.bin"),
                                                  key=lambda f: -int(re.sub(r"\D", "", f.parent.name) or 0))
    for file in files:
        if file.is_file():
            # a pickled GRPOConfig, read as inert data: no code from the run folder runs
            weights = read_pickled_attributes(file).get("reward_weights")
            return None if weights is None else [float(w) for w in weights]
    return None


def read_trl_output(path: Path, *, reward_weights: list | None = None) -> Run:
    """reward_weights: the weights of the reward functions in the logged reward (default: those in the
    run's training_args.bin, else 1 each, as TRL)."""
    weights = reward_weights if reward_weights is not None else training_reward_weights(path)
    files = sorted((path / "completions").glob("completions_*.parquet")) if (path / "completions").is_dir() else []
    warnings, frames = [], []
    for file, frame in zip(files, read_parquet_files(files, warnings)):
        missing = [c for c in ("step", "prompt", "completion") if c not in frame.columns]
        if missing:
            raise ValueError(f"{file}: missing columns {missing} (is this a TRL completions log?)")
        reward_columns = [c for c in frame.columns if c not in NON_REWARD and pd.api.types.is_numeric_dtype(frame[c])]
        if not reward_columns:
            raise ValueError(f"{file}: no numeric reward column")
        # reward functions' own columns become reward_<name> (a function may be called "correct" or "reward")
        frame = frame.rename(columns={c: f"reward_{c}" for c in reward_columns})
        reward_columns = [f"reward_{c}" for c in reward_columns]
        frame["prompt"] = frame["prompt"].map(message_text)
        frame["completion"] = frame["completion"].map(message_text)
        if weights is not None and len(weights) != len(reward_columns):
            raise ValueError(f"{file}: {len(reward_columns)} reward columns {reward_columns} but {len(weights)} "
                             f"reward_weights {weights}")
        scale = pd.Series(weights if weights is not None else [1.0] * len(reward_columns), index=reward_columns)
        # TRL's reward: the weighted sum of the reward functions (NaN where a function gave none)
        frame["reward"] = numeric_reward(frame[reward_columns].mul(scale).sum(axis=1, min_count=1), file)
        frames.append(assign_groups(frame))
    if not frames:
        if not files and _trainer_state(path) is None:
            raise ValueError(f"{path}: TRL output_dir without completions/ or trainer_state.json")
        warnings.append("no completions logged (run GRPOTrainer with log_completions=True for per-response data)")
        responses = pd.DataFrame(columns=["step", "group_id", "prompt", "completion", "reward"])
    else:
        responses = pd.concat(frames, ignore_index=True)
    state_file = _trainer_state(path)
    scalars = read_scalars(state_file) if state_file else pd.DataFrame(columns=["step", "name", "value"])
    meta = {"method": "trl", "source": "trl", "reward_weights": weights}
    return Run("trl", path, responses, meta, scalars, warnings=warnings)
