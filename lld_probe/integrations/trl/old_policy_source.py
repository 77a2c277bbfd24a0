"""Where the probes take the old policy's log-probs, entropy and final hidden states from in a TRL run,
decided once when the trainer is built and recorded in meta.json with its reason:

- "training_forward": TRL's own loss forward. With one optimizer step per generation batch
  (steps_per_generation = gradient_accumulation_steps = num_iterations = 1), no bf16/fp16 autocast, no TF32
  and no dropout, that forward runs at the old policy on the whole generation batch: the probes hook it, and no
  extra forward is needed.
- "separate_forward": a no-grad forward of the generation batch before the update (always correct). Under
  bf16/fp16 autocast it is the only float32 source: TRL's loss forward runs the model under
  accelerator.autocast(), so its hidden states and log-probs are bf16/fp16-computed (an upcast of the
  logits at the end does not recover them), while the probes report float32 numbers
  (lld_probe.scoring.precision); the extra forward is the price of that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OldPolicySource:
    name: str           # "training_forward" | "separate_forward"
    reason: str         # why, in words (meta.json: old_policy_source_reason)


def has_dropout(model) -> bool:
    """Whether a training-mode forward of the model is stochastic (a dropout probability above 0)."""
    config = getattr(model, "config", None)
    rates = [value for key, value in (vars(config).items() if config is not None else ())
             if "dropout" in key and isinstance(value, (int, float)) and not isinstance(value, bool)]
    modules = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    return any(rate > 0 for rate in rates + modules)


def decide_old_policy_source(reuse_training_forward: bool, args, num_iterations: int, model) -> OldPolicySource:
    """The source for a run: args is TRL's GRPOConfig, model the unwrapped policy."""
    if not reuse_training_forward:
        return OldPolicySource("separate_forward", "probe_reuse_training_forward=False")
    steps = {"steps_per_generation": args.steps_per_generation, "num_iterations": num_iterations,
             "gradient_accumulation_steps": args.gradient_accumulation_steps}
    several = {name: value for name, value in steps.items() if value != 1}
    if several:
        settings = ", ".join(f"{name}={value}" for name, value in several.items())
        return OldPolicySource("separate_forward", f"{settings}: TRL's loss forward sees part of the generation "
                                                   f"batch, or sees it after an update")
    if args.bf16 or args.fp16:
        precision = "bf16" if args.bf16 else "fp16"
        return OldPolicySource("separate_forward", f"{precision}=True: TRL's loss forward computes its hidden states "
                                                   f"and log-probs in {precision} under autocast, not the float32 "
                                                   f"numbers the probes report; a float32 forward scores the old "
                                                   f"policy")
    if getattr(args, "tf32", None) or torch.get_float32_matmul_precision() != "highest":
        return OldPolicySource("separate_forward", "TF32 matmuls (tf32=True or float32 matmul precision "
                                                   f"{torch.get_float32_matmul_precision()!r}): TRL's loss forward "
                                                   f"rounds float32 matmuls, a full-precision forward scores the "
                                                   f"old policy")
    if has_dropout(model):
        return OldPolicySource("separate_forward", "the model has dropout: its training forward is not the "
                                                   "old policy's")
    return OldPolicySource("training_forward", "one optimizer step per generation batch, float32, no dropout: "
                                               "TRL's loss forward runs at the old policy on the whole batch")
