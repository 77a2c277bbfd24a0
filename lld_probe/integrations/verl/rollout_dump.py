"""What verl's rollout dump rows ({step}.jsonl in trainer.rollout_data_dir) gain: the token dump's columns
(store.schema.TOKEN_DUMP_COLUMNS) per response, from the batch verl dumps after the update, so that a verl run's
dump is read with our store's columns (analysis.read_verl) and re-scored token-exactly (`lld-probe rescore`).

verl writes every entry of `reward_extra_infos_dict` that has one value per row into the row (its own extension
point of RayPPOTrainer._log_rollout_data); the trainers here add the columns there (trainer.py). Cost: the batch's
ids and per-token log-probs copied to lists, once per step, no forward. The probes' per-row values (verl's own
advantage before the method changed it, logp_before, logp_after) travel in the batch's non-tensor fields that
the probes' step (step.py) sets; without the probes, the advantage is the batch's and those two are null.
"""

from __future__ import annotations

import numpy as np

from ...store.token_dump import dump_columns
from .layout import sequence_advantages, token_lists

# the batch's non-tensor fields the probes' step adds (one value per row, in verl's row order)
ADVANTAGE_FIELD, LOGP_BEFORE_FIELD, LOGP_AFTER_FIELD = "lld_advantage", "lld_logp_before", "lld_logp_after"


def _per_token(batch, key: str, lengths):
    if key not in batch.batch.keys():
        return None
    values = batch.batch[key].float().cpu()
    return [row[: int(n)].tolist() for row, n in zip(values, lengths)]


def _field(batch, name: str):
    values = batch.non_tensor_batch.get(name)
    return None if values is None else np.asarray(values, dtype=float).tolist()


def rollout_dump_columns(batch) -> dict[str, list]:
    """verl's batch (a DataProto after the update: prompts, responses, attention_mask, response_mask, advantages,
    uid; old_log_probs and rollout_log_probs where present) -> {column: one value per row} in its row order."""
    data = batch.batch
    prompt_ids, completion_ids = token_lists(data["prompts"], data["responses"], data["attention_mask"],
                                             data["response_mask"])
    lengths = [len(ids) for ids in completion_ids]
    advantage = _field(batch, ADVANTAGE_FIELD)
    if advantage is None:
        try:
            advantage = sequence_advantages(data["advantages"], data["response_mask"]).tolist()
        except ValueError:          # a critic's GAE: no one advantage per response (NaN; the dump still runs)
            advantage = [float("nan")] * len(completion_ids)
    uid = batch.non_tensor_batch.get("uid")
    return dump_columns(prompt_ids=prompt_ids, completion_ids=completion_ids, advantage=advantage,
                        uid=None if uid is None else list(uid),
                        sampler_logps=_per_token(batch, "rollout_log_probs", lengths),
                        old_policy_logps=_per_token(batch, "old_log_probs", lengths),
                        logp_before=_field(batch, LOGP_BEFORE_FIELD), logp_after=_field(batch, LOGP_AFTER_FIELD))
