"""What the probes record and which advantage variant they apply: the recorder's own settings (no
training framework). lld_probe.integrations.trl.LLDConfig builds them from one TRL config."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core import VARIANTS, parse_eta
from ..scoring.packing import DEFAULT_MAX_TOKENS


@dataclass
class ProbeSettings:
    """Defaults keep the overhead small (README: probe overhead)."""
    method: str = "grpo"                # advantage variant: grpo | pos_only | random | nthr
    nthr_beta: float = 1.0              # NTHR threshold factor: tau = nthr_beta * min anchor (-inf: every token)
    nthr_eta: object = "paper"          # down-weighting of selected tokens: paper (2|0.5-p|) | zero | p | 1-p | number
    nthr_vocab: str = "group"           # "group": the paper's V* restriction; "full": exact, slower
    nthr_anchor_self: bool = True
    seed: int = 0                       # seeds the random control's token draw
    response_fraction: float = 1.0      # share of responses re-scored after the step (logp_after)
    token_rows: bool = True             # per-token rows for the kept responses
    probe_set_size: int = 16            # fixed (prompt, response) pairs drawn at the first mixed step, 0: none
    probe_every: int = 5                # re-score the probe set every k optimizer steps
    eval_every: int = 0                 # greedy accuracy on eval_questions every k steps, 0: never
    eval_max_new_tokens: int | None = None
    correct_threshold: float | None = None   # correct when the deciding reward >= this; None: it must be binary
    correct_reward: str | None = None   # the reward function that decides correctness; None: the weighted sum
    store_dir: str | None = None        # None: the trainer's output_dir
    reuse_training_forward: bool = True  # old-policy scores from the training framework's own loss forward
                                        # when it runs at the old policy; False: a separate no-grad forward
    score_max_tokens: int = DEFAULT_MAX_TOKENS   # packed tokens per re-scoring forward (raise it on a GPU)
    extra_meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in VARIANTS:
            raise ValueError(f"method must be one of {VARIANTS}, got {self.method!r}")
        self.nthr_eta = parse_eta(str(self.nthr_eta)) if isinstance(self.nthr_eta, str) else self.nthr_eta
        if not 0.0 < self.response_fraction <= 1.0:
            raise ValueError(f"response_fraction must be in (0, 1], got {self.response_fraction}")
        if self.nthr_vocab not in ("full", "group"):
            raise ValueError(f"nthr_vocab must be 'full' or 'group', got {self.nthr_vocab!r}")
        if self.probe_every < 1:
            raise ValueError(f"probe_every must be >= 1, got {self.probe_every}")
        if self.score_max_tokens < 1:
            raise ValueError(f"score_max_tokens must be >= 1, got {self.score_max_tokens}")
