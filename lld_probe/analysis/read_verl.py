"""Reader for verl rollout dumps: a folder of {step}.jsonl, one JSON object per line with input,
output, score, step (and optionally gts, acc, ...). Groups are rebuilt from identical inputs within
a step, or from verl's group id where the rows carry the token dump's columns (store.schema.TOKEN_DUMP_COLUMNS,
written by lld_probe.integrations.verl's trainers: uid, prompt_ids, completion_ids, advantage, sampler_logps,
old_policy_logps, logp_before, logp_after), which the responses then hold under the store's names. A truncated
last line of the newest file (a live run) skips that step with a warning."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..store.schema import group_id
from .run import Run, assign_groups, numeric_reward, read_jsonl, step_jsonl_files

REQUIRED_KEYS = ("input", "output", "score")


def read_verl_dumps(path: Path) -> Run:
    files = step_jsonl_files(path)
    warnings, frames, skipped = [], [], {}
    for index, file in enumerate(files):
        is_last = index == len(files) - 1
        rows, truncated = read_jsonl(file, allow_truncated_tail=is_last)
        if truncated:
            skipped[int(file.stem)] = f"{file.name}: truncated last line (the run still writing it?)"
            warnings.append(f"{file.name}: truncated last line (run still writing?): step {file.stem} skipped")
            continue
        for number, row in enumerate(rows, start=1):
            missing = [k for k in REQUIRED_KEYS if k not in row]
            if missing:
                raise ValueError(f"{file}:{number}: missing keys {missing} (verl dumps have input, output, score)")
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        frame["step"] = frame["step"].astype(int) if "step" in frame.columns else int(file.stem)
        frame["reward"] = numeric_reward(frame["score"], file, "score")
        frame = frame.rename(columns={"input": "prompt", "output": "completion"})
        frames.append(_groups_by_uid(frame) if _has_uid(frame) else assign_groups(frame))
    if not frames:
        raise ValueError(f"{path}: no complete verl dump ({{step}}.jsonl) to read")
    responses = pd.concat(frames, ignore_index=True)
    meta = {"method": "verl", "source": "verl"}
    if "acc" in responses.columns:          # verl's own correctness: the deciding reward unless one is named
        meta["default_correct_reward"] = "acc"
    return Run("verl", path, responses, meta, warnings=warnings, skipped_steps=skipped)


def _has_uid(frame: pd.DataFrame) -> bool:
    return "uid" in frame.columns and bool(frame["uid"].notna().all())


def _groups_by_uid(frame: pd.DataFrame) -> pd.DataFrame:
    """group_id and response_index from verl's uid: groups in order of first appearance in the step, responses in
    row order within a group (the probes' order for a verl step: lld_probe.integrations.verl.step)."""
    order = {uid: index for index, uid in enumerate(dict.fromkeys(frame["uid"]))}
    frame["group_id"] = [group_id(step, order[uid]) for step, uid in zip(frame["step"], frame["uid"])]
    frame["response_index"] = frame.groupby("group_id").cumcount()
    return frame
