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
import warnings
from pathlib import Path

import pandas as pd
import torch

from ..core import BINARY_RULE, DEFAULT_RULE, configured_rule, correct_from_rewards, group_advantages, rewards_are_binary
from ..store.protocol_folder import read_protocol_tables
from ..store.run_store import is_run_store, read_run_store
from ..store.schema import protocol_group_id
from .read_trl import read_trl_output
from .read_verl import read_verl_dumps
from .run import Run, step_jsonl_files

REQUIRED = ["step", "group_id", "prompt", "completion", "reward", "correct", "advantage"]


def group_advantages_frame(responses: pd.DataFrame, *, std: str = "sample", eps: float = 1e-4) -> pd.Series:
    """lld_probe.core.group_advantages per group_id (PAPER: advantage; groups may differ in size);
    a response alone in its group gets 0."""
    advantages = pd.Series(0.0, index=responses.index)
    for rows in responses.groupby("group_id", sort=False).groups.values():
        if len(rows) > 1:
            rewards = torch.tensor(responses.loc[rows, "reward"].to_numpy(dtype=float))
            advantages.loc[rows] = group_advantages(rewards, len(rows), std=std, eps=eps).numpy()
    return advantages


def correctness_column(reward: pd.Series, threshold: float | None, *, step: pd.Series | None = None,
                       group: pd.Series | None = None) -> pd.Series:
    """lld_probe.core.correct_from_rewards per row; NA where the reward is NaN. Given each row's step and group
    (a run that records the default rule), each step is one batch and non-binary rewards are split by the
    advantage sign within their group; without them, non-binary rewards and no threshold leave NA everywhere
    (stats that need correctness then refuse with a clear error)."""
    values = torch.tensor(reward.to_numpy(dtype=float))
    known = ~torch.isnan(values)
    unknown = pd.Series(pd.NA, index=reward.index, dtype="boolean")
    if threshold is None and step is not None and group is not None:
        codes = torch.tensor(pd.factorize(group)[0])
        steps = step.to_numpy()
        for value in pd.unique(steps):
            rows = torch.from_numpy(steps == value) & known
            unknown[rows.numpy()] = correct_from_rewards(values[rows], None, groups=codes[rows]).numpy()
        return unknown
    if threshold is None and not rewards_are_binary(values[known]):
        return unknown
    if bool(known.all()):
        return pd.Series(correct_from_rewards(values, threshold).numpy(), index=reward.index)
    unknown[known.numpy()] = correct_from_rewards(values[known], threshold).numpy()
    return unknown


def deciding_reward(run: Run, correct_reward: str | None) -> pd.Series:
    """The reward correctness is read from: the column of one reward function (NAME or reward_NAME) or the
    (weighted) reward."""
    responses = run.responses
    if correct_reward is None:
        return responses["reward"].astype(float)
    for column in (f"reward_{correct_reward}", correct_reward):
        if column in responses.columns:
            return responses[column].astype(float)
    available = [c.removeprefix("reward_") for c in responses.columns if c.startswith("reward_")]
    raise ValueError(f"{run.path}: no reward column {correct_reward!r} for correct_reward; this {run.kind} log has "
                     f"{available or 'only the total reward'}")


def _finish(run: Run, threshold: float | None, correct_reward: str | None) -> Run:
    responses = run.responses
    correct_reward = correct_reward or run.meta.get("default_correct_reward")
    # runs that record no rule (older stores, other frameworks' logs) keep the binary rule
    recorded = run.meta.get("correctness_rule", BINARY_RULE)
    if "correct" not in responses.columns or threshold is not None or correct_reward is not None:
        by_sign = recorded == DEFAULT_RULE
        responses["correct"] = correctness_column(deciding_reward(run, correct_reward), threshold,
                                                  step=responses["step"] if by_sign else None,
                                                  group=responses["group_id"] if by_sign else None)
        recorded = configured_rule(threshold) if by_sign or threshold is not None else BINARY_RULE
    run.meta["correctness_rule"] = recorded
    if "advantage" not in responses.columns:
        responses["advantage"] = group_advantages_frame(responses)
    if responses["correct"].isna().any():
        run.warnings.append("rewards are not binary: `correct` is NA (say what is correct with load(path, "
                            "correct_threshold=X and/or correct_reward=NAME), or --correct-threshold / --correct-reward)")
    missing = [c for c in REQUIRED if c not in responses.columns]
    if missing:
        raise ValueError(f"{run.path}: the {run.kind} reader produced no columns {missing}")
    for message in run.warnings:
        warnings.warn(f"{run.path}: {message}", stacklevel=3)
    return run


def load(path, *, correct_threshold: float | None = None, correct_reward: str | None = None,
         reward_weights: list | None = None) -> Run:
    """Load a run from any supported source (see module doc). Correctness: correct_reward names the reward
    function (column) that decides it (default: the weighted reward), correct_threshold turns a
    non-binary reward into correct/incorrect (reward >= threshold). reward_weights: the reward functions'
    weights in a TRL log's reward (default: its training_args.bin, else 1 each)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if is_run_store(path):
        run = _load_store(path)
    elif (path / "protocol.parquet").is_file():
        run = _load_protocol(path)
    elif (path / "completions").is_dir() or (path / "trainer_state.json").is_file() or \
            any(path.glob("checkpoint-*/trainer_state.json")):
        run = read_trl_output(path, reward_weights=reward_weights)
    elif step_jsonl_files(path):
        run = read_verl_dumps(path)
    else:
        raise ValueError(f"{path}: not a run store, protocol folder, TRL output_dir (completions/ or "
                         f"trainer_state.json) or verl dump folder ({{step}}.jsonl files)")
    return _finish(run, correct_threshold, correct_reward)


def _load_store(path: Path) -> Run:
    store = read_run_store(path)
    return Run("store", path, store.responses.copy(), store.meta, store.scalars, store.tokens, store.probe_set,
               warnings=list(store.warnings))


def _load_protocol(path: Path) -> Run:
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    tables = read_protocol_tables(path)
    responses = tables["responses"].copy()
    if len(responses):
        responses.insert(0, "step", 0)
        # one group per (question, method): every method updates the same sampled group
        responses.insert(1, "group_id", [protocol_group_id(q, v) for q, v in zip(responses["question_id"],
                                                                                  responses["method"])])
        responses["prompt"] = responses["question_id"].astype(str)
    else:
        responses = pd.DataFrame(columns=REQUIRED)
    meta = {"method": "protocol", **meta}
    return Run("protocol", path, responses, meta, tokens=tables["tokens"],
               extra={"protocol": tables["protocol"], "questions": tables["questions"]})


