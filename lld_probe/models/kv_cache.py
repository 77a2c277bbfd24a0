"""A prompt computed once, its KV cache repeated for several continuations: shared by group scoring
(lld_probe.scoring.scoring) and group sampling (lld_probe.models.generation)."""

from __future__ import annotations

import inspect

ATTENTION_LAYERS = {"full_attention", "sliding_attention"}     # layer types whose cache is keys and values


def forward_parameters(model) -> set:
    return set(inspect.signature(model.forward).parameters)


def _cache_argument(model) -> str:
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"   # transformers 5 renamed it


def non_attention_layers(model) -> list[str]:
    """The model's layer types that are not attention (linear attention, convolutions, recurrent/SSM
    layers: config.layer_types), sorted; [] for an attention-only model. Such layers carry a state
    that neither a repeated KV cache nor a packed attention mask handles."""
    config = getattr(model, "config", None)
    return sorted(set(getattr(config, "layer_types", None) or []) - ATTENTION_LAYERS)


def prefill_unsupported_reason(model) -> str | None:
    """Why a prompt cannot be computed once into a cache repeated for its rows (None if it can)."""
    parameters = forward_parameters(model)
    if "logits_to_keep" not in parameters or _cache_argument(model) not in parameters:
        return f"{type(model).__name__}.forward takes no KV cache / logits_to_keep"
    others = non_attention_layers(model)
    if others:
        return f"layer types {others} are not attention layers (their cache state cannot be repeated per row)"
    return None


def supports_prefill(model) -> bool:
    """Whether the model's forward takes a KV cache and logits_to_keep (every recent transformers LM) and
    its layers are attention layers only."""
    return prefill_unsupported_reason(model) is None


def _repeatable(cache) -> bool:
    """Every layer of the cache repeats its rows as plain keys and values (no linear-attention or
    recurrent state, whose repeat transformers does not implement or implements only in part)."""
    if not hasattr(cache, "batch_repeat_interleave"):
        return False
    layers = getattr(cache, "layers", None) or []
    return all(hasattr(layer, "batch_repeat_interleave") and "Linear" not in type(layer).__name__
               for layer in layers)


def prefill_repeated(model, input_ids, repeats: int, **kwargs):
    """(output, cache): forward of input_ids [P, L] with the output layer at the last position only, and
    its cache repeated `repeats` times per row (prompt-major); cache None when the model returned none
    (e.g. gradient checkpointing turns the cache off) or one whose layers are not all key/value layers."""
    output = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **kwargs)
    cache = output.get("cache")
    cache = output.get("past_key_values") if cache is None else cache
    if cache is None or not _repeatable(cache):
        return output, None
    cache.batch_repeat_interleave(repeats)
    return output, cache


def with_cache(model, cache) -> dict:
    """The keyword that hands `cache` to this model's forward."""
    return {_cache_argument(model): cache}
