"""The model that scoring runs: a PEFT wrapper is scored through its base model where that gives the same
numbers, so that it gets what the base model's forward takes (position ids for packing, a KV cache)."""

from __future__ import annotations


def transformers_model(model):
    """The transformers model inside DDP-like wrappers (`.module`) and a PEFT wrapper: the object whose config
    names the logit transform, the attention implementation and any quantization."""
    while getattr(model, "config", None) is None and hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def scoring_model(model):
    """model itself, or for a PEFT wrapper whose adapters live inside the base model's layers (LoRA and
    its kin: PeftModel.forward only passes through to the base model) the base model, with the adapters
    active as they are. A prompt-learning adapter (prefix or prompt tuning: virtual tokens added by the
    wrapper's forward) stays wrapped."""
    if not hasattr(model, "get_base_model") or not hasattr(model, "peft_config"):
        return model
    config = getattr(model, "active_peft_config", None)
    if config is None or getattr(config, "is_prompt_learning", True):
        return model
    return model.get_base_model()
