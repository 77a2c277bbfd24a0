"""LLDConfig: TRL's GRPOConfig plus the advantage variant and the probes, one documented config for a run.

Every field has a help text, grouped as TRL groups its own. The NTHR threshold factor is `nthr_beta`:
TRL's own `beta` is the KL coefficient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trl import GRPOConfig

from ...core import VARIANTS, parse_eta
from ...probes import ProbeSettings
from ...scoring.packing import DEFAULT_MAX_TOKENS


@dataclass
class LLDConfig(GRPOConfig):
    # > Advantage variant (PAPER Sec. 4 and 5.3)
    lld_method: str = field(default="nthr", metadata={
        "help": "grpo (TRL's advantages) | pos_only (negative advantages set to 0) | random (eta on as many random "
                "tokens per incorrect response as NTHR selects) | nthr (eta on NTHR's selected tokens)"})
    nthr_beta: float = field(default=1.0, metadata={
        "help": "NTHR threshold factor: tau = nthr_beta * min anchor of the correct responses; -inf selects "
                "every incorrect token (not TRL's KL `beta`)"})
    nthr_eta: str = field(default="paper", metadata={
        "help": "factor on the advantage of selected tokens: paper (2|0.5 - p|) | zero | p | 1-p | a number in [0, 1]"})
    nthr_vocab: str = field(default="group", metadata={
        "help": "group: error vectors restricted to the group's tokens (the paper's V*, cheaper) | full: exact"})
    nthr_anchor_self: bool = field(default=True, metadata={
        "help": "a correct response's anchor includes its interaction with itself (paper); False leaves it out"})

    # > Probes
    probe_response_fraction: float = field(default=1.0, metadata={
        "help": "share of responses re-scored after the update (their logp_after); the rest get NaN"})
    probe_token_rows: bool = field(default=True, metadata={
        "help": "write per-token rows (log-probs before/after, NTHR score, selection, entropy) to tokens/"})
    probe_set_size: int = field(default=16, metadata={
        "help": "fixed probe responses (half correct, half near misses) drawn at the first mixed step; 0: none"})
    probe_every: int = field(default=5, metadata={"help": "re-score the probe set every k optimizer steps"})
    probe_reuse_training_forward: bool = field(default=True, metadata={
        "help": "old-policy scores from TRL's loss forward when it runs at the old policy (else a separate forward)"})
    probe_score_max_tokens: int = field(default=DEFAULT_MAX_TOKENS, metadata={
        "help": "packed tokens per re-scoring forward (attention under the packing mask costs its square; "
                "raise it on a GPU)"})

    # > Evaluation and correctness
    lld_eval_every: int = field(default=0, metadata={
        "help": "greedy accuracy on the trainer's eval_questions every k steps (0: never)"})
    correct_threshold: float | None = field(default=None, metadata={
        "help": "a response is correct when the deciding reward >= this; None: that reward must be binary 0/1"})
    correct_reward: str | None = field(default=None, metadata={
        "help": "name of the reward function that decides correctness (e.g. an accuracy reward next to a "
                "format reward); None: the weighted sum of all reward functions (reward_weights)"})

    def __post_init__(self):
        super().__post_init__()
        if self.lld_method not in VARIANTS:
            raise ValueError(f"lld_method must be one of {VARIANTS}, got {self.lld_method!r}")
        if math.isnan(self.nthr_beta) or self.nthr_beta == math.inf:
            raise ValueError(f"nthr_beta must be a finite number or -inf, got {self.nthr_beta}")
        self.nthr_eta_policy = parse_eta(str(self.nthr_eta))

    def probe_settings(self, **extra) -> ProbeSettings:
        """The recorder's settings of this run."""
        return ProbeSettings(method=self.lld_method, nthr_beta=self.nthr_beta, nthr_eta=self.nthr_eta_policy,
                             nthr_vocab=self.nthr_vocab, nthr_anchor_self=self.nthr_anchor_self, seed=self.seed,
                             response_fraction=self.probe_response_fraction, token_rows=self.probe_token_rows,
                             probe_set_size=self.probe_set_size, probe_every=self.probe_every,
                             eval_every=self.lld_eval_every, correct_threshold=self.correct_threshold,
                             correct_reward=self.correct_reward,
                             reuse_training_forward=self.probe_reuse_training_forward,
                             score_max_tokens=self.probe_score_max_tokens, **extra)
