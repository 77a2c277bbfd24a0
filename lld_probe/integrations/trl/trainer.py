"""The NTHR reference trainer: TRL's GRPOTrainer with the paper's advantage variants and the probes.

    config = LLDConfig(output_dir="runs/x", lld_method="nthr", num_generations=8, ...)
    trainer = LLDGRPOTrainer(model=model, args=config, reward_funcs=[reward], train_dataset=dataset,
                             processing_class=tokenizer)

It is exactly the composition below: the variant is applied by the probe recorder (NTHR's selection
uses the old policy's final hidden states of the whole group and is fixed for the generation batch),
the old policy's scores come from TRL's own loss forward when that forward runs at the old policy.
Generation, clipping, KL, loss_type, accelerate and report_to are TRL's: a GRPO config runs unchanged.
"""

from __future__ import annotations

from trl import GRPOTrainer

from .adapter import LikelihoodProbeMixin
from .config import LLDConfig
from .loss_forward import OldPolicyFromLossForward


class LLDGRPOTrainer(OldPolicyFromLossForward, LikelihoodProbeMixin, GRPOTrainer):
    """GRPOTrainer + advantage variant (args.lld_method) + likelihood probes and run store."""

    def __init__(self, *args, probe_settings=None, **kwargs):
        config = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        if not isinstance(config, LLDConfig):
            raise TypeError("LLDGRPOTrainer needs args=LLDConfig(...)")
        super().__init__(*args, probe_settings=probe_settings or config.probe_settings(), **kwargs)
