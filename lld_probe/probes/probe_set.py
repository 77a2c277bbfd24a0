"""The probe set: fixed (prompt, response) pairs, half correct responses and half near misses
(incorrect responses of mixed groups), drawn at the first step that has a mixed group and re-scored
every k steps, so that their log-likelihood trajectories show LLD over training."""

from __future__ import annotations

import pandas as pd

from ..core import sequence_logprob
from ..scoring import build_group_batch, score_group
from .records import ProbedBatch


def probe_candidates(probed: ProbedBatch, comm) -> list[dict]:
    """Every response of the step (all processes), in global row order, as the draw needs it."""
    generation, batch = probed.generation, probed.batch
    offset = generation.layout.offset
    local = [{"row": offset + i, "group": (offset + i) // generation.group_size, "correct": bool(generation.correct[i]),
              "question_id": generation.question_ids[i],
              "prompt_ids": batch.input_ids[i, : int(batch.prompt_lengths[i])].tolist(),
              "completion_ids": batch.tokens[i, : int(batch.mask[i].sum())].tolist(),
              "measured": _flags(batch, i),
              "logp_before": float(probed.old.logp_before[i])} for i in range(generation.size)
             if batch.measured[i].any()]      # responses without measured tokens never enter the probe set
    if comm.world_size == 1:
        return local
    return [row for rows in comm.all_gather_object(local, purpose="probe_set") for row in rows]


def _flags(batch, row: int) -> list[bool] | None:
    """The measured flags of a row's completion tokens; None when every token is measured."""
    flags = batch.measured[row, : int(batch.mask[row].sum())]
    return None if bool(flags.all()) else flags.tolist()


def draw_probe_set(candidates: list[dict], size: int, group_size: int) -> list[dict]:
    """Half correct responses, half near misses, distinct, taken round-robin over the mixed groups of the
    step; empty when the step has no mixed group."""
    groups: dict = {}
    for row in candidates:
        groups.setdefault(row["group"], []).append(row)
    mixed = [rows for _, rows in sorted(groups.items())
             if any(r["correct"] for r in rows) and not all(r["correct"] for r in rows)]
    seen, per_kind = set(), {"correct": [], "near_miss": []}
    for round_index in range(group_size):
        for rows in mixed:
            for kind, wanted in (("correct", True), ("near_miss", False)):
                of_kind = [r for r in rows if r["correct"] == wanted]
                if round_index < len(of_kind):
                    row = of_kind[round_index]
                    key = (tuple(row["prompt_ids"]), tuple(row["completion_ids"]))
                    if key not in seen:
                        seen.add(key)
                        per_kind[kind].append(row)
    near_miss = per_kind["near_miss"][: size // 2]
    correct = per_kind["correct"][: size - len(near_miss)]
    near_miss = per_kind["near_miss"][: size - len(correct)]
    chosen = [("correct", r) for r in correct] + [("near_miss", r) for r in near_miss]
    return [{"probe_id": probe_id, "kind": kind, "question_id": row["question_id"], "prompt_ids": row["prompt_ids"],
             "completion_ids": row["completion_ids"], "measured": row.get("measured"), "row": row["row"],
             "logp_before": row["logp_before"]}
            for probe_id, (kind, row) in enumerate(chosen)]


def probe_set_rows(items: list[dict], step: int, logps: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"step": step, "probe_id": [it["probe_id"] for it in items],
                         "kind": [it["kind"] for it in items], "question_id": [it["question_id"] for it in items],
                         "n_tokens": [_measured_count(it) for it in items], "logp": logps})


def _measured_count(item: dict) -> int:
    flags = item.get("measured")
    return len(item["completion_ids"]) if flags is None else int(sum(bool(f) for f in flags))


def score_probe_set(model, items: list[dict], *, pad_id: int, temperature: float, max_tokens: int) -> list[float]:
    """Current log-likelihood of every probe response (its measured tokens; an item without "measured", as
    written before tool masks were recorded, measures every token)."""
    batch = build_group_batch([it["prompt_ids"] for it in items], [it["completion_ids"] for it in items], pad_id,
                              [it.get("measured") for it in items])
    scored = score_group(model, batch, temperature=temperature, max_tokens=max_tokens)
    return sequence_logprob(scored.token_logps, batch.measured).tolist()
