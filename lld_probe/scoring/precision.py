"""The precision of the probes' forwards: float32 wherever the weights are float32, whatever the training
precision, and a stated, measured resolution where the weights themselves are low precision.

Mixed-precision training (accelerate's `prepare_model` with bf16/fp16, which TRL's bf16=True turns on)
replaces the model's `forward` by an autocast wrapper and keeps the plain one as `_original_forward`;
a probe calling the model then computes in bf16, with errors in a sequence log-likelihood far larger than
the changes it measures. `float32_forwards(model)` runs the probes' forwards on the plain forward with
autocast off, for the duration of the block only: the training forward keeps its autocast.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def _autocast_wrapped(model) -> bool:
    """Whether model.forward is accelerate's mixed-precision wrapper of its own forward."""
    original = model.__dict__.get("_original_forward")
    return original is not None and model.__dict__.get("forward") is not original


def weights_dtype(model) -> torch.dtype:
    """The floating dtype most of the model's parameters hold."""
    counts: dict = {}
    for parameter in model.parameters():
        if parameter.is_floating_point():
            counts[parameter.dtype] = counts.get(parameter.dtype, 0) + parameter.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def low_precision_weights(model) -> bool:
    """Weights of fewer than 32 bits (a model loaded in bf16/fp16): float32 numbers cannot be recovered."""
    return weights_dtype(model).itemsize < 4


def probe_precision(model) -> str:
    """What the probes' log-likelihoods are computed in, for meta.json: "float32" (float64 for a float64
    model), or "<dtype> weights" where the weights themselves are low precision."""
    dtype = weights_dtype(model)
    name = str(dtype).removeprefix("torch.")
    return name if dtype.itemsize >= 4 else f"{name} weights"


def low_precision_compute(model, autocast_dtype=None) -> bool:
    """Whether a forward of the model here computes below float32: low-precision weights, an explicit
    autocast dtype, an autocast context around the call, or accelerate's autocast wrapper."""
    device_type = next(model.parameters()).device.type
    return (low_precision_weights(model) or autocast_dtype is not None or _autocast_wrapped(model)
            or torch.is_autocast_enabled(device_type))


@contextmanager
def float32_forwards(model):
    """Within the block, calls of the model run its own forward (not accelerate's autocast wrapper) with
    autocast off: the weights' precision, float32 for float32 weights. The wrapper is put back on exit."""
    wrapped = model.__dict__.get("forward") if _autocast_wrapped(model) else None
    if wrapped is not None:
        model.forward = model.__dict__["_original_forward"]
    try:
        with torch.autocast(device_type=next(model.parameters()).device.type, enabled=False):
            yield model
    finally:
        if wrapped is not None:
            model.forward = wrapped
