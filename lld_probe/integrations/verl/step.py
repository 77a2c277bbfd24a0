"""The driver's side of one verl step with the probes, around the actor update (RayPPOTrainer._update_actor):

1. arrange the batch's rows by group (verl marks a prompt's responses with one `uid`; trainer.balance_batch
   scatters them across data-parallel ranks for token balance): the probes score a copy in group order, so
   rank r holds rows [r * B_local, (r + 1) * B_local) of whole or split groups, as the recorder expects;
2. the worker group scores the old policy (EngineProbes.score_old_policy on every rank) and returns the
   method's advantages, written back into the batch in verl's own row order;
3. verl's update runs on the batch (balanced as verl laid it out);
4. the worker group re-scores after the update and writes the run store; the step's `lld/` metrics join the
   actor's, so verl's tracking (console, W&B, TensorBoard, ...) logs them; each row's verl advantage (before the
   method changed it), logp_before and logp_after join the batch's non-tensor fields, in verl's row order, for the
   rollout dump (rollout_dump.py).
"""

from __future__ import annotations

import numpy as np
import torch

from .engine_probes import (ADVANTAGES_KEY, ALL_REWARDS_KEY, GROUP_SIZE_KEY, REWARD_KEY, STEP_KEY,
                            WINDOW_STEPS_KEY, encode_rewards)
from .layout import sequence_advantages
from .rollout_dump import ADVANTAGE_FIELD, LOGP_AFTER_FIELD, LOGP_BEFORE_FIELD


def group_order(uids, group_size: int) -> torch.Tensor:
    """Row indices that put each uid's rows next to each other (groups in order of first appearance, rows in
    batch order within a group); every group must hold group_size rows."""
    first: dict = {}
    members: list[list[int]] = []
    for row, uid in enumerate(uids):
        if uid not in first:
            first[uid] = len(members)
            members.append([])
        members[first[uid]].append(row)
    sizes = sorted({len(rows) for rows in members})
    if sizes != [group_size]:
        raise ValueError(f"the batch's groups (rows sharing a uid) hold {sizes} responses, expected "
                         f"actor_rollout_ref.rollout.n={group_size} each (filtered or padded groups are not supported)")
    return torch.tensor([row for rows in members for row in rows], dtype=torch.long)


def sequence_rewards(batch) -> torch.Tensor:
    """One reward per response: verl's token-level scores summed (the outcome reward sits on the last token)."""
    return batch.batch["token_level_scores"].sum(-1).float()


class ProbeStep:
    """worker_group: verl's actor worker group with LLDActorRolloutRefWorker's calls (or a stand-in)."""

    def __init__(self, worker_group, *, group_size: int):
        self.worker_group = worker_group
        self.group_size = group_size

    def update_actor(self, batch, update, *, step: int, window_steps: int = 1):
        """batch: verl's DataProto after compute_advantage; update: verl's own update (batch -> DataProto whose
        meta_info["metrics"] holds the actor's metrics); window_steps: the optimizer steps update takes on the
        batch (the store's window_steps). Returns update's result with the lld/ metrics added."""
        from verl.utils import tensordict_utils as tu
        from verl.workers.utils.padding import left_right_2_no_padding

        order = group_order(batch.non_tensor_batch["uid"], self.group_size)
        scoring = batch.select_idxs(order)
        rewards = sequence_rewards(scoring)
        scoring.batch[REWARD_KEY] = rewards
        data = left_right_2_no_padding(scoring.to_tensordict())
        tu.assign_non_tensor(data, **{STEP_KEY: int(step), GROUP_SIZE_KEY: self.group_size,
                                      ALL_REWARDS_KEY: encode_rewards(rewards), WINDOW_STEPS_KEY: int(window_steps)})
        scored = self.worker_group.lld_score_old_policy(data)
        advantages = torch.as_tensor(scored[ADVANTAGES_KEY]).to(batch.batch["advantages"].dtype)
        restored = torch.empty_like(advantages)
        restored[order] = advantages                     # back to verl's row order
        batch.non_tensor_batch[ADVANTAGE_FIELD] = sequence_advantages(batch.batch["advantages"],
                                                                      batch.batch["response_mask"]).double().numpy()
        batch.batch["advantages"] = restored
        output = update(batch)
        actor_metrics = output.meta_info.get("metrics", {})
        scalars = {name: float(np.mean(value)) for name, value in actor_metrics.items()
                   if isinstance(value, (int, float, list, np.ndarray)) and np.size(value)}
        ranks = self.worker_group.lld_finish_step(scalars)
        ranks = list(ranks) if isinstance(ranks, (list, tuple)) else [ranks]
        for field, key in ((LOGP_BEFORE_FIELD, "logp_before"), (LOGP_AFTER_FIELD, "logp_after")):
            # rank r's rows are rows [r * B_local, (r + 1) * B_local) of the group order
            values = np.concatenate([np.asarray(rank["rows"][key], dtype=np.float64) for rank in ranks])
            restored_values = np.empty_like(values)
            restored_values[order.numpy()] = values
            batch.non_tensor_batch[field] = restored_values
        output.meta_info["metrics"] = {**actor_metrics, **ranks[0]["metrics"]}       # the same on every rank
        return output
