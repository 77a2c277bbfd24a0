"""What passes between TRL's calls within one generation batch: one explicit object, owned by the mixin,
instead of attributes scattered over the trainer. TRL calls, in order, _calculate_rewards (rewards per
function: the only place they are all visible), _generate_and_score_completions (the generation batch),
_compute_loss and inside it _get_per_token_logps_and_entropies (where the old policy's scores come from
when TRL's loss forward is the source)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class TRLHandoff:
    rewards_per_func: object = None       # [N, F] gathered rewards of every process, from _calculate_rewards
    awaiting_loss: object = None          # GenerationBatch whose old-policy scores TRL's loss forward will give
    loss_inputs: dict | None = None       # the inputs of the _compute_loss call that scores it
    # per generation batch awaiting its record, oldest first: the micro-step count (TRL's _step) at which TRL is
    # done with it (its buffered slices all used, num_iterations times); the recorder's pending batches in order
    batch_ends: deque = field(default_factory=deque)

    def take_finished(self, micro_steps: int) -> int:
        """How many of the oldest batches TRL is done with after `micro_steps` micro-steps (and forget them)."""
        done = 0
        while self.batch_ends and self.batch_ends[0] <= micro_steps:
            self.batch_ends.popleft()
            done += 1
        return done

    def take_rewards(self):
        rewards, self.rewards_per_func = self.rewards_per_func, None
        if rewards is None:
            raise RuntimeError("TRL produced a generation batch without calling _calculate_rewards first: "
                               "the probes cannot see its rewards (TRL changed? see tests/test_trl_pins.py)")
        return rewards

    def take_loss_inputs(self):
        inputs, self.loss_inputs = self.loss_inputs, None
        return inputs
