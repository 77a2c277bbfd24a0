"""The NTHR reference trainer: TRL's GRPOTrainer with the paper's methods and the probes.

    config = LLDConfig(output_dir="runs/x", method="nthr", num_generations=8, ...)
    trainer = LLDGRPOTrainer(model=model, args=config, reward_funcs=[reward], train_dataset=dataset,
                             processing_class=tokenizer)

It is exactly LikelihoodProbeMixin on GRPOTrainer, and takes its arguments as GRPOTrainer does (positional
or keyword): the method is applied by the probe recorder (NTHR's selection uses the old policy's final hidden
states of the whole group and is fixed for the generation batch). Generation, clipping, KL, loss_type,
accelerate and report_to are TRL's: a GRPO config runs unchanged.
"""

from __future__ import annotations

from trl import GRPOTrainer

from .adapter import LikelihoodProbeMixin


class LLDGRPOTrainer(LikelihoodProbeMixin, GRPOTrainer):
    """GRPOTrainer + the method of args (an LLDConfig: method, nthr_*) + likelihood probes and run store."""
