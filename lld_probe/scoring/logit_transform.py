"""The model's logit transform (lld_probe.core.logit_transform), read once from its config: the one place
that knows which config entries change the map from the output embedding's product W h to the logits."""

from __future__ import annotations

from ..core.logit_transform import LogitTransform
from ..models.adapters import scoring_model


def _text_config(model):
    model = scoring_model(model)
    while getattr(model, "config", None) is None and hasattr(model, "module"):    # DDP / FSDP wrappers
        model = model.module
    config = getattr(model, "config", None)
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def logit_transform_of(model) -> LogitTransform:
    """logits = softcap * tanh(scale * W h / softcap) as the model's causal-LM head computes them:
    final_logit_softcapping (Gemma-2/3) is the softcap; logit_scale (Cohere) multiplies and logits_scaling
    (Granite) divides W h. Models with none of them (most) get the identity."""
    config = _text_config(model)
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = float(getattr(config, "logit_scale", None) or 1.0)
    divisor = getattr(config, "logits_scaling", None)
    if divisor and not _scales_hidden_states(model):
        scale /= float(divisor)
    return LogitTransform(scale=scale, softcap=float(softcap) if softcap else None)


def _scales_hidden_states(model) -> bool:
    """MiniCPM3 applies its logits_scaling to the hidden states before lm_head: the captured input of the
    output embedding already holds it."""
    return getattr(_text_config(model), "model_type", None) == "minicpm3"
