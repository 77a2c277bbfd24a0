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

from ..models.adapters import transformers_model


def _autocast_wrapped(model) -> bool:
    """Whether model.forward is accelerate's mixed-precision wrapper of its own forward."""
    original = model.__dict__.get("_original_forward")
    return original is not None and model.__dict__.get("forward") is not original


def _fsdp2_compute_dtypes(model) -> dict:
    """id(parameter) -> the dtype FSDP2 casts it to for forwards (fully_shard's MixedPrecisionPolicy
    param_dtype, which accelerate sets for mixed_precision bf16/fp16); parameters without a cast are absent."""
    casts = {}
    for module in model.modules():
        get_state = getattr(module, "_get_fsdp_state", None)       # an FSDPModule (torch's fully_shard)
        if get_state is None:
            continue
        state = get_state()
        param_dtype = getattr(getattr(state, "_mp_policy", None), "param_dtype", None)
        group = getattr(state, "_fsdp_param_group", None)
        if param_dtype is not None and group is not None:
            casts.update({id(fsdp_param.sharded_param): param_dtype for fsdp_param in group.fsdp_params})
    return casts


def _dtype_counts(model, casts: dict) -> dict:
    counts: dict = {}
    for parameter in model.parameters():
        if parameter.is_floating_point():
            dtype = casts.get(id(parameter), parameter.dtype)
            # a ZeRO-3 partitioned parameter is empty outside a forward: ds_numel is its size
            counts[dtype] = counts.get(dtype, 0) + (getattr(parameter, "ds_numel", None) or parameter.numel())
    return counts


def quantization_of(model) -> str | None:
    """The quantization method of a transformers model loaded quantized (bitsandbytes 4/8-bit, GPTQ, AWQ, ...:
    its weights are not floating point, so the dtype counts above do not see them), else None."""
    owner = transformers_model(model)
    if getattr(owner, "hf_quantizer", None) is None:
        return None
    config = getattr(owner.config, "quantization_config", None)
    method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
    return str(getattr(method, "value", method) or "quantized")


def weights_dtype(model) -> torch.dtype:
    """The floating dtype most of the model's parameters compute with in a forward: the dtype they hold, or
    the one FSDP2's mixed precision casts them to when gathered."""
    counts = _dtype_counts(model, _fsdp2_compute_dtypes(model))
    return max(counts, key=counts.get) if counts else torch.float32


def low_precision_weights(model) -> bool:
    """Weights of fewer than 32 bits (a model loaded in bf16/fp16, or quantized): float32 numbers cannot be
    recovered."""
    return weights_dtype(model).itemsize < 4 or quantization_of(model) is not None


def probe_precision(model) -> str:
    """What the probes' log-likelihoods are computed in, for meta.json: "float32" (float64 for a float64
    model), "<dtype> weights" where the weights themselves are low precision, "<method> quantized weights", or
    "<dtype> parameters (FSDP2 mixed precision)" where FSDP2 casts float32 weights to <dtype> for every forward,
    the probes' included."""
    dtype = weights_dtype(model)
    name = str(dtype).removeprefix("torch.")
    quantization = quantization_of(model)
    if quantization is not None:
        return f"{quantization} quantized weights"
    if dtype.itemsize >= 4:
        return name
    stored = _dtype_counts(model, {})
    return f"{name} weights" if max(stored, key=stored.get) == dtype else f"{name} parameters (FSDP2 mixed precision)"


def packing_tolerance(model, autocast_dtype=None) -> float:
    """The largest |difference| in a token log-prob between packed and padded-row forwards that the packing
    check accepts: float rounding of the precision the forwards compute in here (call it where they run)."""
    return 5e-2 if low_precision_compute(model, autocast_dtype) else 1e-3


def low_precision_compute(model, autocast_dtype=None) -> bool:
    """Whether a forward of the model here computes below float32: low-precision weights, an explicit
    autocast dtype, an autocast context around the call, or accelerate's autocast wrapper."""
    device_type = next(model.parameters()).device.type
    return (low_precision_weights(model) or autocast_dtype is not None or _autocast_wrapped(model)
            or torch.is_autocast_enabled(device_type))


def half_precision_attention(model) -> str | None:
    """The model's attention implementation when it computes in bf16/fp16 only (flash-attention kernels),
    else None."""
    name = getattr(getattr(transformers_model(model), "config", None), "_attn_implementation", None)
    return name if isinstance(name, str) and "flash" in name else None


@contextmanager
def float32_forwards(model):
    """Within the block, calls of the model run its own forward (not accelerate's autocast wrapper) with
    autocast off: the weights' precision, float32 for float32 weights. For float32 weights the block also
    makes float32 exact where the training may not have it: float32 matmuls at full precision (no TF32), and
    sdpa attention in place of flash-attention, whose kernels take only bf16/fp16. Everything is put back
    on exit."""
    wrapped = model.__dict__.get("forward") if _autocast_wrapped(model) else None
    if wrapped is not None:
        model.forward = model.__dict__["_original_forward"]
    flash = half_precision_attention(model) if not low_precision_weights(model) else None
    if flash is not None:
        owner = transformers_model(model)
        configs = {id(module.config): module.config for module in owner.modules()
                   if hasattr(getattr(module, "config", None), "_attn_implementation")}
        implementations = [(config, config._attn_implementation) for config in configs.values()]
        owner.set_attn_implementation("sdpa")
    matmul_precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast(device_type=next(model.parameters()).device.type, enabled=False):
            yield model
    finally:
        torch.set_float32_matmul_precision(matmul_precision)
        if flash is not None:          # back as it was (no re-validation of what the model was loaded with)
            for config, implementation in implementations:
                config._attn_implementation = implementation
        if wrapped is not None:
            model.forward = wrapped
