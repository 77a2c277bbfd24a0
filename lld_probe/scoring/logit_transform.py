"""The model's logit transform (lld_probe.core.logit_transform), read once from its config: the one place
that knows which config entries change the map from the output embedding's product W h to the logits."""

from __future__ import annotations

from ..core.logit_check import logprob_recomputation_error
from ..core.logit_transform import LogitTransform
from ..models.adapters import transformers_model

LOGITS_SCALING_MULTIPLIES = {"hyperclovax"}     # logits * logits_scaling (Granite and most others divide)
LOGITS_SCALING_ON_HIDDEN = {"minicpm3"}         # h / logits_scaling before lm_head: the captured h holds it


def logit_transform_of(model) -> LogitTransform:
    """logits = softcap * tanh(scale * W h / softcap) as the model's causal-LM head computes them:
    final_logit_softcapping (Gemma-2/3) is the softcap; logit_scale (Cohere), output_multiplier and
    lm_head_multiplier (Falcon-H1) multiply W h, logits_scaling (Granite) divides it. Models with none of them
    (most) get the identity. Raises ValueError for an output layer with a bias (logits = W h + b), which the
    NTHR kernel does not follow."""
    model = transformers_model(model)
    config = getattr(model, "config", None)
    getter = getattr(config, "get_text_config", None)
    text = getter() if callable(getter) else config
    kinds = {getattr(config, "model_type", None), getattr(text, "model_type", None)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if getattr(head, "bias", None) is not None:
        raise ValueError(f"{type(model).__name__}'s output layer has a bias: the NTHR and interaction scores "
                         f"assume logits = f(W h) and cannot follow this model's logits exactly (not supported)")
    softcap = getattr(text, "final_logit_softcapping", None)
    scale = 1.0
    for multiplier in ("logit_scale", "output_multiplier", "lm_head_multiplier"):    # Cohere, ..., Falcon-H1
        scale *= float(getattr(text, multiplier, None) or 1.0)
    divisor = getattr(text, "logits_scaling", None)
    if divisor and not kinds & LOGITS_SCALING_ON_HIDDEN:
        scale = scale * float(divisor) if kinds & LOGITS_SCALING_MULTIPLIES else scale / float(divisor)
    return LogitTransform(scale=scale, softcap=float(softcap) if softcap else None)


# the largest |recomputed - forward| log-prob accepted, in nats: far above float rounding (TF32 matmuls
# included) and far below what an unread transform, an adapter on the head or a shifted hidden state gives
HEAD_CHECK_TOLERANCE = {"float32": 0.1, "low_precision": 0.5}


def check_head_follows(hidden, unembed, tokens, mask, token_logps, *, temperature: float,
                       transform: LogitTransform | None) -> None:
    """Raise ValueError (one line) unless the forward's log-probs equal log softmax(f(W h) / temperature) at a
    few measured tokens: the NTHR, GWHES and first-order scores assume exactly that map (see
    lld_probe.core.logit_check). The tolerance follows the precision of the hidden states and the weights."""
    low_precision = hidden.dtype.itemsize < 4 or unembed.dtype.itemsize < 4
    tolerance = HEAD_CHECK_TOLERANCE["low_precision" if low_precision else "float32"]
    error = logprob_recomputation_error(hidden, unembed, tokens, mask, token_logps, temperature=temperature,
                                        transform=transform)
    if error > tolerance:
        described = (transform or LogitTransform()).describe()
        raise ValueError(
            f"the model's log-probs are not log softmax(f(W h) / temperature) of its final hidden states h and output "
            f"embedding W with the logit transform read from its config ({described}): they differ by {error:.3g} "
            f"nats (tolerance {tolerance:g}), so NTHR scores would be wrong; an output head with a transform its "
            f"config does not name, or an adapter on the output layer, is not supported")
