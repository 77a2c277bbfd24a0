"""What passes between TRL's calls within one generation batch: one explicit object, owned by the mixin,
instead of attributes scattered over the trainer. TRL calls, in order, _calculate_rewards (rewards per
function: the only place they are all visible), _generate_and_score_completions (the generation batch),
_compute_loss and inside it _get_per_token_logps_and_entropies (where the old policy's scores come from
when TRL's loss forward is the source)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TRLHandoff:
    rewards_per_func: object = None       # [N, F] gathered rewards of every process, from _calculate_rewards
    awaiting_loss: object = None          # GenerationBatch whose old-policy scores TRL's loss forward will give
    loss_inputs: dict | None = None       # the inputs of the _compute_loss call that scores it

    def take_rewards(self):
        rewards, self.rewards_per_func = self.rewards_per_func, None
        if rewards is None:
            raise RuntimeError("TRL produced a generation batch without calling _calculate_rewards first: "
                               "the probes cannot see its rewards (TRL changed? see tests/test_trl_pins.py)")
        return rewards

    def take_loss_inputs(self):
        inputs, self.loss_inputs = self.loss_inputs, None
        return inputs
