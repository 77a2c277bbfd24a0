"""A second device on a CPU-only machine, for tests of device discipline.

Inside `elsewhere_device()`, tensors wrapped by `elsewhere(t)` behave as if they lived on another device
(reported as torch.device("meta"), the stand-in for a GPU): an operation that meets such a tensor and a
plain CPU tensor raises, as CUDA does ("Expected all tensors to be on the same device"); a 0-d CPU
tensor passes only where CUDA takes it as a scalar (not in cat/stack/matmul/indexing-style ops). Indexing
an elsewhere tensor with a plain index is allowed (CUDA allows CPU indices); .numpy() and np.asarray of
an elsewhere tensor raise, as they do for a CUDA tensor.
`.to(device)` with the stand-in device moves a plain tensor elsewhere; `.cpu()` / `.to("cpu")` bring it
back; factories called with device=<stand-in> build elsewhere tensors. The values are computed on the
CPU, so results can be compared exactly with an all-CPU run.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

STAND_IN = torch.device("meta")
_FACTORIES = {torch.zeros, torch.ones, torch.full, torch.empty, torch.arange, torch.tensor, torch.as_tensor,
              torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.randn, torch.rand,
              torch.randperm, torch.linspace, torch.eye}
_NO_SCALAR_OPERANDS = {torch.cat, torch.stack, torch.matmul, torch.mm, torch.bmm, torch.einsum, torch.index_select,
                       torch.gather, torch.Tensor.gather, torch.Tensor.index_select, torch.Tensor.__matmul__,
                       torch.Tensor.matmul, torch.Tensor.scatter_, torch.Tensor.masked_scatter}


class Elsewhere(torch.Tensor):
    """A CPU tensor that stands for one on another device (only meaningful inside elsewhere_device())."""


def elsewhere(tensor: torch.Tensor) -> Elsewhere:
    return tensor.as_subclass(Elsewhere)


def _plain(value):
    return value.as_subclass(torch.Tensor) if isinstance(value, Elsewhere) else value


def _is_stand_in(device) -> bool:
    return device is not None and torch.device(device) == STAND_IN


def _target_device(args, kwargs):
    """The device a .to(...) call asks for, or None."""
    if "device" in kwargs:
        return kwargs["device"]
    for value in args[1:]:
        if isinstance(value, (str, torch.device)):
            return value
        if isinstance(value, torch.Tensor):
            return STAND_IN if isinstance(value, Elsewhere) else torch.device("cpu")
    return None


class _Mode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == torch.Tensor.device.__get__:
            return STAND_IN if isinstance(args[0], Elsewhere) else torch.device("cpu")
        if func in _FACTORIES and _is_stand_in(kwargs.get("device")):
            like = args[0] if func.__name__.endswith("_like") else None
            kwargs = {**kwargs, "device": "cpu"}
            if like is not None:
                args = (_plain(like), *args[1:])
            with torch._C.DisableTorchFunction():
                return elsewhere(func(*args, **kwargs))
        if func in (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda):
            return self._move(func, args, kwargs)
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and isinstance(args[0], Elsewhere):
            raise TypeError("can't convert a tensor on the other device to numpy: use .cpu() first")
        tensors = [value for value in tree_flatten((args, kwargs))[0] if isinstance(value, torch.Tensor)]
        if not any(isinstance(t, Elsewhere) for t in tensors):
            with torch._C.DisableTorchFunction():
                return func(*args, **kwargs)
        mixed = _cpu_operands(func, args, tensors)
        if mixed:
            raise RuntimeError(f"Expected all tensors to be on the same device, but {func.__name__} got a CPU "
                               f"tensor of shape {tuple(mixed[0].shape)} with a tensor on the other device")
        with torch._C.DisableTorchFunction():
            result = func(*tree_map(_plain, args), **tree_map(_plain, kwargs))
        return tree_map(lambda value: elsewhere(value) if isinstance(value, torch.Tensor) else value, result)

    @staticmethod
    def _move(func, args, kwargs):
        source = args[0]
        if func is torch.Tensor.cpu:
            target = torch.device("cpu")
        elif func is torch.Tensor.cuda:
            target = STAND_IN
        else:
            target = _target_device(args, kwargs)
        rest = [value for value in args[1:] if not isinstance(value, (str, torch.device, torch.Tensor))]
        options = {key: value for key, value in kwargs.items() if key != "device"}
        like = [value for value in args[1:] if isinstance(value, torch.Tensor)]
        if like:                                   # .to(other): other's dtype too
            options["dtype"] = like[0].dtype
        with torch._C.DisableTorchFunction():
            moved = _plain(source).to(*rest, **options) if (rest or options) else _plain(source)
        stays_elsewhere = _is_stand_in(target) if target is not None else isinstance(source, Elsewhere)
        return elsewhere(moved) if stays_elsewhere else moved


def _cpu_operands(func, args, tensors) -> list:
    """The plain CPU tensors (more than 0-d) that meet an elsewhere tensor in func, as CUDA would reject them:
    operands must share the device; an index into an elsewhere tensor may stay on the CPU."""
    if func is torch.Tensor.__getitem__:
        return [] if isinstance(args[0], Elsewhere) else [args[0]]
    if func is torch.Tensor.__setitem__:
        target, value = args[0], args[2]
        if not isinstance(target, Elsewhere):
            return [target]
        return [value] if isinstance(value, torch.Tensor) and not isinstance(value, Elsewhere) and value.dim() else []
    if func in _NO_SCALAR_OPERANDS:
        return [t for t in tensors if not isinstance(t, Elsewhere)]
    return [t for t in tensors if not isinstance(t, Elsewhere) and t.dim() > 0]


@contextlib.contextmanager
def elsewhere_device():
    """Within this block, Elsewhere tensors live on the stand-in device (see the module docstring)."""
    with _Mode():
        yield
