"""The NTHR reference trainer: TRL's GRPOTrainer with the paper's advantage variants and the probes.

    config = LLDConfig(output_dir="runs/x", lld_method="nthr", num_generations=8, ...)
    trainer = LLDGRPOTrainer(model=model, args=config, reward_funcs=[reward], train_dataset=dataset,
                             processing_class=tokenizer)

Methods: grpo (TRL's advantages untouched), pos_only (negative advantages set to 0), nthr (A * eta on
the tokens of incorrect responses that NTHR selects, PAPER: NTHR objective), random (A * eta on as many
random tokens per incorrect response as NTHR selected there). The selection uses the old policy's
final hidden states of the whole group and is fixed for the generation batch. Generation, clipping,
KL, loss_type, accelerate and report_to are TRL's: an existing GRPO config runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import GRPOConfig, GRPOTrainer

from ..probe.packing import DEFAULT_MAX_TOKENS
from .probes import LikelihoodProbeMixin, ProbeSettings
from .variants import VARIANTS, variant_token_advantages


@dataclass
class LLDConfig(GRPOConfig):
    lld_method: str = field(default="nthr", metadata={"help": "grpo | pos_only | random | nthr"})
    nthr_beta: float = field(default=1.0, metadata={"help": "NTHR threshold factor (-inf: every incorrect token)"})
    nthr_eta: str = field(default="paper", metadata={"help": "paper (2|0.5-p|) | zero | p | 1-p | a number"})
    nthr_vocab: str = field(default="group", metadata={"help": "group (paper's V*) | full (exact)"})
    nthr_anchor_self: bool = field(default=True)
    probe_response_fraction: float = field(default=1.0)
    probe_token_rows: bool = field(default=True)
    probe_set_size: int = field(default=16)
    probe_every: int = field(default=5)
    probe_reuse_training_forward: bool = field(default=True, metadata={
        "help": "old-policy scores from TRL's loss forward when it runs at the old policy (else a separate forward)"})
    probe_score_max_tokens: int = field(default=DEFAULT_MAX_TOKENS, metadata={
        "help": "packed tokens per re-scoring forward (attention under the packing mask costs its square)"})
    lld_eval_every: int = field(default=0, metadata={"help": "greedy eval accuracy every k steps (0: never)"})
    correct_threshold: float | None = field(default=None, metadata={"help": "None: rewards must be binary"})

    def __post_init__(self):
        super().__post_init__()
        if self.lld_method not in VARIANTS:
            raise ValueError(f"lld_method must be one of {VARIANTS}, got {self.lld_method!r}")
        from ..core import parse_eta
        self.nthr_eta_policy = parse_eta(str(self.nthr_eta))

    def probe_settings(self, **extra) -> ProbeSettings:
        return ProbeSettings(response_fraction=self.probe_response_fraction, token_rows=self.probe_token_rows,
                             nthr_vocab=self.nthr_vocab, nthr_anchor_self=self.nthr_anchor_self,
                             nthr_beta=self.nthr_beta, probe_set_size=self.probe_set_size,
                             probe_every=self.probe_every, eval_every=self.lld_eval_every,
                             correct_threshold=self.correct_threshold,
                             reuse_training_forward=self.probe_reuse_training_forward,
                             score_max_tokens=self.probe_score_max_tokens, **extra)


class LLDGRPOTrainer(LikelihoodProbeMixin, GRPOTrainer):
    """GRPOTrainer + advantage variant (args.lld_method) + likelihood probes and run store."""

    def __init__(self, *args, probe_settings: ProbeSettings | None = None, **kwargs):
        config = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        if not isinstance(config, LLDConfig):
            raise TypeError("LLDGRPOTrainer needs args=LLDConfig(...)")
        super().__init__(*args, probe_settings=probe_settings or config.probe_settings(), **kwargs)

    def _lld_method(self) -> str:
        return self.args.lld_method

    def _lld_meta(self) -> dict:
        return {"method": self.args.lld_method, "nthr_beta": self.args.nthr_beta, "nthr_eta": self.args.nthr_eta,
                "nthr_vocab": self.args.nthr_vocab, "nthr_anchor_self": self.args.nthr_anchor_self}

    def _lld_advantages(self, pending, trl_advantages, completion_width):
        method = self.args.lld_method
        nothing = torch.zeros_like(pending.selected)
        if method == "grpo":
            return trl_advantages, nothing
        if method == "pos_only":     # PAPER: Pos Only drops the negative gradient
            return trl_advantages.clamp(min=0), nothing
        per_token = torch.zeros(trl_advantages.shape[0], completion_width, dtype=trl_advantages.dtype)
        scaled = torch.zeros_like(pending.selected)
        batch, size = pending.batch, pending.group_size
        width = batch.tokens.shape[1]
        for group_index, start in enumerate(range(0, batch.size, size)):
            rows = slice(start, start + size)
            tokens_adv, scaled_rows = variant_token_advantages(
                method, trl_advantages[rows].detach().float().cpu(), batch.mask[rows], pending.correct[rows],
                pending.selected[rows], self.args.nthr_eta_policy,
                seed=hash((self.args.seed, pending.step, group_index)) % (2 ** 31))
            per_token[rows, :width] = tokens_adv.to(per_token.dtype)
            scaled[rows] = scaled_rows
        return per_token.to(trl_advantages.device), scaled
