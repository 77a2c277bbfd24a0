"""What the probes record and which method they apply: the recorder's settings, the one definition of every
probe setting. lld_probe.integrations.trl.LLDConfig takes its probe fields from here (same names, defaults
and help) and the command line is generated from them, so none of them can drift."""

from dataclasses import dataclass, field

from ..core import METHODS, NTHRSettings, setting
from ..scoring.packing import DEFAULT_MAX_TOKENS


@dataclass
class ProbeSettings(NTHRSettings):
    """Defaults keep the overhead small (docs/benchmarks.md). Fields marked internal are set by the
    integration that drives the recorder, not by users."""
    method: str = setting("grpo", "grpo (the trainer's advantages) | pos_only (negative advantages set to 0) | "
                                  "random (eta on as many random tokens per incorrect response as NTHR selects) | "
                                  "nthr (eta on NTHR's selected tokens)")
    probe_response_fraction: float = setting(1.0, "share of responses re-scored after the update (their "
                                                  "logp_after); the rest get NaN")
    probe_token_rows: bool = setting(True, "write per-token rows (log-probs before/after, NTHR score, selection, "
                                           "entropy) to tokens/")
    probe_set_size: int = setting(16, "fixed probe responses (half correct, half near misses) drawn at the first "
                                      "mixed step; 0: none")
    probe_every: int = setting(5, "re-score the probe set every k optimizer steps")
    probe_reuse_training_forward: bool = setting(True, "old-policy scores from the trainer's own loss forward when "
                                                       "it runs at the old policy (else a separate forward)")
    probe_score_max_tokens: int = setting(DEFAULT_MAX_TOKENS, "packed tokens per re-scoring forward (attention "
                                                              "under the packing mask costs its square; raise it "
                                                              "on a GPU)")
    eval_every: int = setting(0, "greedy accuracy on held-out questions every k steps (0: never)")
    correct_threshold: float | None = setting(None, "a response is correct when the deciding reward >= this; "
                                                    "None: reward == 1 when a batch's rewards are binary 0/1, "
                                                    "else reward above its group's mean (advantage > 0)")
    correct_reward: str | None = setting(None, "name of the reward function that decides correctness (e.g. an "
                                               "accuracy reward next to a format reward); None: the weighted sum "
                                               "of all reward functions (reward_weights)")
    # set by the integration
    seed: int = setting(0, "seeds the random control's token draw and the re-scored share", internal=True)
    eval_max_new_tokens: int | None = setting(None, "greedy evaluation length (None: the trainer's completion "
                                                    "length)", internal=True)
    store_dir: str | None = setting(None, "run store folder (None: the trainer's output_dir)", internal=True)
    extra_meta: dict = field(default_factory=dict, metadata={"help": "more meta.json entries", "internal": True})

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.probe_response_fraction <= 1.0:
            raise ValueError(f"probe_response_fraction must be in (0, 1], got {self.probe_response_fraction}")
        for name, low in (("probe_every", 1), ("probe_score_max_tokens", 1), ("probe_set_size", 0),
                          ("eval_every", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")


def user_fields(cls=ProbeSettings) -> list:
    """The settings a user sets (LLDConfig's probe fields, the command line's): every field not internal."""
    from dataclasses import fields
    return [f for f in fields(cls) if not f.metadata.get("internal")]
