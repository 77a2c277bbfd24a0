"""Sharded models (FSDP2, DeepSpeed ZeRO-3): which sharding a model has, the full output embedding for the
probes, and the refusal of what the probes cannot measure exactly (docs/sharding.md).

The NTHR scores need the whole output embedding W [V, d] on every process; a sharded model holds a slice of
it (FSDP2: a DTensor; ZeRO-3: a partitioned parameter of shape (0,)). `full_output_embedding` gathers it
once per batch, on every process, and yields a plain [V, d] tensor, valid inside the block. The forwards of
a sharded model gather its parameters themselves; lld_probe.scoring.lockstep makes every process run as many.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

FSDP1_REFUSAL = ("FSDP1 (torch FullyShardedDataParallel) is not supported by the probes: its flat parameters "
                 "hide the output embedding and its wrapper's forward takes no packed layout; use FSDP2 "
                 "(fsdp_version: 2 in accelerate's FSDP config) or DeepSpeed ZeRO-3")


def sharding_of(model) -> str | None:
    """"zero3" (DeepSpeed ZeRO-3 parameters), "fsdp2" (DTensor parameters of fully_shard), "fsdp1"
    (a FullyShardedDataParallel module) or None (whole parameters on every process: one process, DDP)."""
    from torch.distributed.tensor import DTensor
    if _is_fsdp1(model):
        return "fsdp1"
    for parameter in model.parameters():
        if hasattr(parameter, "ds_id"):
            return "zero3"
        if isinstance(parameter, DTensor):
            return "fsdp2"
    if _fsdp2_module(model):       # fully_shard'ed, its parameters unsharded right now (after a forward)
        return "fsdp2"
    return None


def refuse_unsupported_sharding(model) -> str | None:
    """The model's sharding (sharding_of), or a ValueError naming what the probes cannot support."""
    kind = sharding_of(model)
    if kind == "fsdp1":
        raise ValueError(FSDP1_REFUSAL)
    return kind


@contextmanager
def full_output_embedding(model):
    """The output embedding W [V, d] as a plain full tensor, gathered on every process for a sharded model
    (a collective: every process enters the block at the same point). Use it inside the block only."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (get_output_embeddings() is None)")
    weight = head.weight
    if hasattr(weight, "ds_id"):                  # DeepSpeed ZeRO-3: partitioned, shape (0,) outside a forward
        import deepspeed
        with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
            yield _checked(weight.data, head, "DeepSpeed ZeRO-3")
        return
    from torch.distributed.tensor import DTensor
    if isinstance(weight, DTensor):               # FSDP2: this process's shard; full_tensor() all-gathers it
        yield _checked(weight.detach().full_tensor(), head, "FSDP2")
        return
    if _is_fsdp1(model):
        raise ValueError(FSDP1_REFUSAL)
    yield _checked(weight.detach(), head, None)   # whole (one process, DDP, or an FSDP2 unit left unsharded)


def _checked(weight: torch.Tensor, head, sharding: str | None) -> torch.Tensor:
    """A [V, d] matrix, else a one-line error naming the sharding that hid it."""
    expected = getattr(head, "out_features", None), getattr(head, "in_features", None)
    if weight.dim() != 2 or (None not in expected and tuple(weight.shape) != expected):
        raise ValueError(f"the output embedding has shape {tuple(weight.shape)}, expected {expected}"
                         + (f" after gathering it from {sharding}" if sharding else
                            " (a sharded parameter that this sharding's gather does not reach?)"))
    return weight


def _is_fsdp1(model) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel
    return any(isinstance(module, FullyShardedDataParallel) for module in model.modules())


def _fsdp2_module(model) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return any(isinstance(module, FSDPModule) for module in model.modules())
