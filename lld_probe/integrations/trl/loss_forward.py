"""Opt-in: the old policy's scores from TRL's own loss forward instead of a separate forward.

    class MyTrainer(OldPolicyFromLossForward, LikelihoodProbeMixin, GRPOTrainer): ...

With one optimizer step per generation batch (steps_per_generation = gradient_accumulation_steps =
num_iterations = 1), no bf16/fp16 autocast and no dropout, TRL's loss forward runs at the old policy on
the whole batch. This mixin then hooks the backbone's output during that forward (TRL's fused LM head
never calls lm_head as a module), hands the log-probs, entropy and hidden states to the recorder, and
writes the method's advantages into the batch before TRL's loss reads them (the sanctioned route for
per-token advantages, as TRL's own MiniLLM trainer does). A row index carried through TRL's shuffle
puts the groups back together. Otherwise it falls back to the separate forward.

TRL methods this relies on (pinned by tests/test_trl_pins.py): _compute_loss, which calls
_get_per_token_logps_and_entropies on the policy before it reads inputs["advantages"].
"""

from __future__ import annotations

import torch

from ...scoring import capture_backbone_hidden, output_embedding_weight
from .adapter import _has_dropout, pad_advantages


class OldPolicyFromLossForward:
    def _lld_old_policy_source(self) -> str:
        """"training_forward" when TRL's loss forward runs at the old policy on the whole generation batch
        and computes what a separate scoring would; otherwise "separate_forward"."""
        args = self.args
        if not self.probe_settings.reuse_training_forward:
            return "separate_forward"
        if (args.steps_per_generation != 1 or self.num_iterations != 1 or args.gradient_accumulation_steps != 1
                or args.bf16 or args.fp16 or _has_dropout(self._lld_model())):
            return "separate_forward"
        return "training_forward"

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training and self.old_policy_source == "training_forward":
            # scored by TRL's loss forward below; the row index survives TRL's shuffle
            output["lld_row"] = torch.arange(output["completion_ids"].shape[0], device=output["advantages"].device)
        return output

    def _lld_begin_batch(self, inputs, output):
        generation = super()._lld_begin_batch(inputs, output)
        self._lld_awaiting_loss = generation if self.old_policy_source == "training_forward" else None
        return generation

    def _compute_loss(self, model, inputs):
        generation = getattr(self, "_lld_awaiting_loss", None)
        self._lld_loss_inputs = inputs if generation is not None and "lld_row" in inputs else None
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._lld_loss_inputs = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        inputs, self._lld_loss_inputs = getattr(self, "_lld_loss_inputs", None), None
        if inputs is None:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              *args, **kwargs)
        with capture_backbone_hidden(self.accelerator.unwrap_model(model)) as captured:
            logps, entropies, *rest = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **{**kwargs, "compute_entropy": True})
        states = captured.get("hidden")
        if states is None or states.dim() != 3 or tuple(states.shape[:2]) != tuple(input_ids.shape):
            raise RuntimeError(f"the backbone hook saw {None if states is None else tuple(states.shape)} for inputs "
                               f"{tuple(input_ids.shape)}: this model's loss forward cannot give the old policy's "
                               f"hidden states; set probe_reuse_training_forward=False")
        # the state at position t-1 predicts token t: completion token j is predicted at L - logits_to_keep - 1 + j
        hidden = states[:, -logits_to_keep - 1:-1]
        self._lld_old_policy_from_loss(inputs, logps.detach(), entropies.detach(), hidden, logits_to_keep)
        return (logps, entropies, *rest)

    def _lld_old_policy_from_loss(self, inputs, logps, entropies, hidden, completion_width: int) -> None:
        """The loss forward of the whole generation batch (rows in TRL's shuffled order) -> the recorder,
        and the method's advantages written into inputs before TRL reads them."""
        generation, self._lld_awaiting_loss = self._lld_awaiting_loss, None
        rows = inputs["lld_row"].cpu()
        if not torch.equal(rows.sort().values, torch.arange(generation.size)):
            raise RuntimeError(f"the loss forward holds {len(rows)} of the generation batch's {generation.size} "
                               f"rows: old-policy scores need the whole batch in one micro-batch")
        order = rows.argsort()           # shuffled position of each generation-order row
        width = generation.batch.tokens.shape[1]
        if completion_width < width:
            raise RuntimeError(f"TRL scored {completion_width} completion positions, the batch has {width}")
        probed = self.recorder.score_old_policy(generation, logps[order][:, :width], entropies[order][:, :width],
                                                hidden[order][:, :width], output_embedding_weight(self._lld_model()))
        advantages = pad_advantages(probed.loss_advantages, completion_width).to(inputs["advantages"].device)
        inputs["advantages"] = advantages[rows.to(advantages.device)]
