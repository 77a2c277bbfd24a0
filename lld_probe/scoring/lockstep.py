"""Scoring on a sharded model (FSDP2, DeepSpeed ZeRO-3): every process runs the same number of forwards.

A sharded model gathers its parameters inside each forward, a collective that every process must join. The
processes hold different rows (different lengths, a different number of re-scored responses, none at all), so
left alone they would run different numbers of forwards and hang (NCCL) or fail (gloo). Here the processes
first agree, in one all-reduce, on the layout (packed only where every process can pack) and on the number
of forwards (the most any process needs); a process with fewer real forwards runs one-token forwards whose
outputs are discarded. The one-time packing check runs on every process at once, on its own rows or on a
fixed two-row sample when it has none, and the processes keep the check's verdict only if all passed.

The numbers are those of score_group: each chunk of rows is scored by forward_logps, in one forward, in the
weights' precision under any autocast (float32_forwards), the packing check included.
"""

from __future__ import annotations

import warnings

import torch

from .batch import GroupBatch, build_group_batch
from .packing import DEFAULT_MAX_TOKENS, packing_unsupported_reason, plan_chunks
from .precision import float32_forwards, packing_tolerance
from .scoring import _PACKING_CHECKS, ScoredGroup, _check_sample, forward_logps, packing_verified

_ONE_FORWARD = 1 << 62        # max_tokens that keeps a chunk in one packed forward

# a two-row sample for the packing check of a process that holds no rows (its tokens are arbitrary ids)
_IDLE_SAMPLE = ([[1, 2, 3], [1, 2, 3]], [[4, 5, 6, 7], [8, 9]])


def score_in_lockstep(model, batch: GroupBatch | None, comm, *, temperature: float = 1.0,
                      with_hidden: bool = False, with_entropy: bool = False,
                      max_tokens: int = DEFAULT_MAX_TOKENS) -> ScoredGroup | None:
    """score_group of this process's rows (None: no rows), running as many forwards as every other process.
    comm: the processes' collectives (all_reduce of a tensor with op "max"/"min"); every process must call
    this at the same point. Returns None for batch None."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), float32_forwards(model):
            packed = _agree_packing(model, batch, comm, temperature)
            chunks = plan_chunks(batch, max_tokens) if batch is not None else []
            layout = "packed" if packed else "rows"
            forwards = agree_on_count(comm, len(chunks))
            results = [forward_logps(model, batch.select(rows), temperature=temperature, with_hidden=with_hidden,
                                     with_entropy=with_entropy, layout=layout, max_tokens=_ONE_FORWARD)
                       for rows in chunks]
            for _ in range(forwards - len(chunks)):
                idle_forward(model)
    finally:
        model.train(was_training)
    if batch is None:
        return None
    return _in_batch_order(chunks, results, batch.size)


def idle_forward(model) -> None:
    """One forward of a single token, outputs discarded: joins the parameter gathers of the others' forward."""
    device = next(model.parameters()).device
    with torch.no_grad(), float32_forwards(model):
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device), use_cache=False)


def agree(comm, flag: bool) -> bool:
    """Whether flag holds on every process (one all-reduce)."""
    return bool(comm.all_reduce(torch.tensor([int(flag)], dtype=torch.long), "min", purpose="lockstep")[0])


def agree_on_count(comm, count: int) -> int:
    """The largest count of any process (one all-reduce)."""
    return int(comm.all_reduce(torch.tensor([count], dtype=torch.long), "max", purpose="lockstep")[0])


def _agree_packing(model, batch: GroupBatch | None, comm, temperature: float) -> bool:
    """Whether every process scores packed: the model and every process's rows allow it, and the one-time
    packing check (two forwards on every process) passed everywhere."""
    if not agree(comm, packing_unsupported_reason(model, batch) is None):
        return False
    verified = packing_verified(model)
    if verified is None:
        sample = _check_sample(batch) if batch is not None and batch.mask.any() else \
            build_group_batch(*_IDLE_SAMPLE, pad_id=0)
        packed = forward_logps(model, sample, temperature=temperature, layout="packed",
                               max_tokens=_ONE_FORWARD).token_logps
        rows = forward_logps(model, sample, temperature=temperature, layout="rows").token_logps
        difference = float((packed - rows).abs().max()) if sample.mask.any() else 0.0
        verified = agree(comm, difference <= packing_tolerance(model))
        if not verified:
            warnings.warn(f"packed scoring of {type(model).__name__} differs from full rows (here by "
                          f"{difference:.3g} in a token log-prob): scoring this model in padded rows instead",
                          stacklevel=3)
        _PACKING_CHECKS[model] = verified
    return verified


def _in_batch_order(chunks: list[torch.Tensor], results: list[ScoredGroup], size: int) -> ScoredGroup:
    """The chunks' scores (row subsets that partition the batch) in batch order."""
    if not chunks:
        raise ValueError("a batch with rows gave no chunks to score")
    inverse = torch.cat(chunks).argsort()
    if len(inverse) != size:
        raise RuntimeError(f"the chunks cover {len(inverse)} rows of a batch of {size}")
    parts = [(r.token_logps, r.hidden, r.entropy) for r in results]
    return ScoredGroup(*[torch.cat(p)[inverse.to(p[0].device)] if p[0] is not None else None for p in zip(*parts)])
