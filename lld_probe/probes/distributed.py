"""Processes and the generation batch's layout across them.

A GRPO generation batch of B_global = world_size x local_rows responses holds groups of G consecutive
responses to one prompt; process r holds the contiguous rows [r * local_rows, (r + 1) * local_rows)
(TRL's RepeatSampler layout). A group is split across processes exactly when local_rows % G != 0.
`Communicator` is the little the probes need from torch.distributed; `SingleProcess` needs nothing.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import torch


class SingleProcess:
    """One process: every collective is the identity."""
    rank = 0
    world_size = 1

    def all_gather_object(self, value, purpose: str = "other") -> list:
        return [value]

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", purpose: str = "other", ranks=None) -> torch.Tensor:
        return tensor

    def prepare_groups(self, rank_sets) -> None:
        pass

    def barrier(self) -> None:
        pass


class TorchDistributed:
    """Collectives over the default torch.distributed process group (gloo on CPU, nccl on GPUs).
    `device` is where tensors travel (cuda for nccl); results come back on the caller's device."""

    def __init__(self, device: torch.device | str | None = None):
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("torch.distributed is not initialised: launch with torchrun or accelerate launch")
        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        if device is None:
            device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        self.device = torch.device(device)
        self.traffic: dict = {}         # purpose -> bytes this process contributed (for tests and benchmarks)
        self._subgroups: dict = {}      # sorted ranks -> process group

    def _count(self, purpose: str, size: int) -> None:
        self.traffic[purpose] = self.traffic.get(purpose, 0) + size

    def all_gather_object(self, value, purpose: str = "other") -> list:
        self._count(purpose, len(pickle.dumps(value)))
        values = [None] * self.world_size
        self._dist.all_gather_object(values, value)
        return values

    def prepare_groups(self, rank_sets) -> None:
        """Create the process subgroups for these sets of ranks (a collective: every process calls it with
        the same sets in the same order); created once, then reused."""
        for ranks in sorted({tuple(sorted(r)) for r in rank_sets}):
            if ranks not in self._subgroups and len(ranks) < self.world_size:
                self._subgroups[ranks] = self._dist.new_group(list(ranks))

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", purpose: str = "other", ranks=None) -> torch.Tensor:
        """Reduce over all processes, or over `ranks` only (a subgroup made by prepare_groups)."""
        ops = {"sum": self._dist.ReduceOp.SUM, "min": self._dist.ReduceOp.MIN, "max": self._dist.ReduceOp.MAX}
        group = None if ranks is None or len(ranks) == self.world_size else self._subgroups[tuple(sorted(ranks))]
        moved = tensor.to(self.device).contiguous()
        self._dist.all_reduce(moved, op=ops[op], group=group)
        self._count(purpose, moved.numel() * moved.element_size())
        return moved.to(tensor.device)

    def barrier(self) -> None:
        self._dist.barrier()


def communicator_for(world_size: int, device=None):
    """SingleProcess for one process, TorchDistributed otherwise."""
    return SingleProcess() if world_size == 1 else TorchDistributed(device)


@dataclass(frozen=True)
class GroupSlice:
    """The part of one group that this process holds."""
    group: int                 # index of the group in the global generation batch
    local: slice               # its rows in this process's batch
    first_index: int           # response index (within the group) of the first local row
    whole: bool                # all G responses are on this process


@dataclass(frozen=True)
class RowLayout:
    rank: int
    world_size: int
    local_rows: int
    group_size: int

    @property
    def offset(self) -> int:
        """Global index of this process's first row."""
        return self.rank * self.local_rows

    @property
    def splits_groups(self) -> bool:
        return self.local_rows % self.group_size != 0 and self.world_size > 1

    def groups(self) -> list[GroupSlice]:
        """The (parts of) groups on this process, in row order."""
        parts, row = [], 0
        while row < self.local_rows:
            global_row = self.offset + row
            group, index = divmod(global_row, self.group_size)
            count = min(self.group_size - index, self.local_rows - row)
            parts.append(GroupSlice(group, slice(row, row + count), index, count == self.group_size))
            row += count
        return parts

    def global_rows(self) -> slice:
        return slice(self.offset, self.offset + self.local_rows)

    def ranks_of_group(self, group: int) -> tuple:
        """The processes that hold some of a group's rows."""
        first, last = group * self.group_size, (group + 1) * self.group_size - 1
        return tuple(range(first // self.local_rows, last // self.local_rows + 1))
