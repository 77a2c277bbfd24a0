"""Per-model defaults, measured on this repository's models: the one place that holds them. Other models
have no measured learning rate (a run must give one) and sample up to OTHER_MODELS_COMPLETION_LENGTH tokens."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDefaults:
    learning_rate: float | None     # GRPO training (docs/results.md: training comparisons); None: not measured
    completion_length: int          # tokens sampled per response (max_completion_length, max_new_tokens)


MODEL_DEFAULTS = {
    "tiny": ModelDefaults(learning_rate=1e-4, completion_length=24),
    # chain: at temperature 0.7 and a constant lr, 3e-5 lifts GRPO's held-out accuracy 0.79 -> 0.88 in 40 steps,
    # 3e-4 collapses it to 0.20 in 10 (docs/results.md: training time on the testbed)
    "chain": ModelDefaults(learning_rate=3e-5, completion_length=96),
    "smollm2": ModelDefaults(learning_rate=5e-6, completion_length=48),
}
OTHER_MODELS_COMPLETION_LENGTH = 256


def completion_length_for(model_name: str, requested: int | None = None) -> int:
    """The requested length, else the named model's default (OTHER_MODELS_COMPLETION_LENGTH for others)."""
    if requested is not None:
        return requested
    defaults = MODEL_DEFAULTS.get(model_name)
    return defaults.completion_length if defaults else OTHER_MODELS_COMPLETION_LENGTH


def learning_rate_for(model_name: str) -> float | None:
    """The named model's measured training learning rate; None when none was measured."""
    defaults = MODEL_DEFAULTS.get(model_name)
    return defaults.learning_rate if defaults else None
