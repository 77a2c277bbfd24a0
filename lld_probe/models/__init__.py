"""Models: "tiny" (shipped in data/tiny), "chain" (data/chain), "smollm2" (from its PyPI package), or any HF folder/id."""

from .generation import Completion, greedy_completions, sample_groups
from .loading import NAMED_MODELS, load_model, resolve_model_path

__all__ = ["Completion", "NAMED_MODELS", "greedy_completions", "load_model", "resolve_model_path", "sample_groups"]
