"""Argument validation shared by the core functions: every error names the offending argument."""

from __future__ import annotations

import torch


def check_tensor(name: str, value, *, ndim: int | None = None, dtype: str | None = None,
                 finite: bool = False) -> torch.Tensor:
    """Raise ValueError naming `name` unless `value` is a tensor of the given rank and dtype kind.

    dtype is one of "float", "long" (any integer type), "bool", or None (any).
    """
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if dtype == "float" and not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if dtype == "long" and (value.is_floating_point() or value.dtype == torch.bool or value.is_complex()):
        raise ValueError(f"{name} must be an integer tensor, got {value.dtype}")
    if dtype == "bool" and value.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got {value.dtype}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return value


def on_device(device, *tensors):
    """The tensors on `device` (None stays None). Core functions take a group's masks and ids from
    wherever they were built (often the CPU) and its hidden states from the model's device: they
    compute where the model lives (the unembedding's device, else the first float input's) and
    return their results there."""
    return tuple(None if tensor is None else tensor.to(device) for tensor in tensors)


def check_shape(name: str, value: torch.Tensor, shape: tuple) -> None:
    """Raise ValueError naming `name` unless value.shape == shape."""
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")


def check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0 and value != float("inf")):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
