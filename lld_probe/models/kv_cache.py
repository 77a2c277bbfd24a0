"""A prompt computed once, its KV cache repeated for several continuations: shared by group scoring
(lld_probe.scoring.scoring) and group sampling (lld_probe.models.generation)."""

from __future__ import annotations

import inspect


def forward_parameters(model) -> set:
    return set(inspect.signature(model.forward).parameters)


def _cache_argument(model) -> str:
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"   # transformers 5 renamed it


def supports_prefill(model) -> bool:
    """Whether the model's forward takes a KV cache and logits_to_keep (every recent transformers LM)."""
    parameters = forward_parameters(model)
    return "logits_to_keep" in parameters and _cache_argument(model) in parameters


def prefill_repeated(model, input_ids, repeats: int, **kwargs):
    """(output, cache): forward of input_ids [P, L] with the output layer at the last position only, and
    its cache repeated `repeats` times per row (prompt-major); cache None when the model returned none
    (e.g. gradient checkpointing turns the cache off)."""
    output = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **kwargs)
    cache = output.get("cache")
    cache = output.get("past_key_values") if cache is None else cache
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return output, None
    cache.batch_repeat_interleave(repeats)
    return output, cache


def with_cache(model, cache) -> dict:
    """The keyword that hands `cache` to this model's forward."""
    return {_cache_argument(model): cache}
