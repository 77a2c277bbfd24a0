"""CHES (Razin et al. 2024, "Unintentional Unalignment"): centered hidden embedding similarity of a
preference pair, for parity with the DPO likelihood-displacement literature."""

from __future__ import annotations

import torch

from ._checks import check_shape, check_tensor, on_device


def ches(hidden_chosen, mask_chosen, hidden_rejected, mask_rejected, *, length_normalized=False) -> torch.Tensor:
    """CHES(x, y+, y-) = <sum h+, sum h-> - ||sum h+||^2 over response positions. Returns [B].

    hidden_* [B, T, d]: the hidden states that predict the response tokens; mask_* [B, T] bool.
    length_normalized: use the means over positions instead of the sums (Razin et al.'s
    length-normalised variant).
    """
    for name, value in (("hidden_chosen", hidden_chosen), ("hidden_rejected", hidden_rejected)):
        check_tensor(name, value, ndim=3, dtype="float", finite=True)
    for name, value, ref in (("mask_chosen", mask_chosen, hidden_chosen),
                             ("mask_rejected", mask_rejected, hidden_rejected)):
        check_tensor(name, value, ndim=2, dtype="bool")
        check_shape(name, value, tuple(ref.shape[:2]))
    if hidden_chosen.shape[0] != hidden_rejected.shape[0] or hidden_chosen.shape[2] != hidden_rejected.shape[2]:
        raise ValueError(f"hidden_rejected must have batch and hidden size of hidden_chosen "
                         f"{tuple(hidden_chosen.shape)}, got {tuple(hidden_rejected.shape)}")
    mask_chosen, hidden_rejected, mask_rejected = on_device(hidden_chosen.device, mask_chosen, hidden_rejected,
                                                            mask_rejected)
    dtype = torch.float64 if hidden_chosen.dtype == torch.float64 else torch.float32
    sum_chosen = (hidden_chosen.to(dtype) * mask_chosen[..., None]).sum(1)
    sum_rejected = (hidden_rejected.to(dtype) * mask_rejected[..., None]).sum(1)
    if length_normalized:
        sum_chosen = sum_chosen / mask_chosen.sum(1, keepdim=True).clamp(min=1)
        sum_rejected = sum_rejected / mask_rejected.sum(1, keepdim=True).clamp(min=1)
    # Razin et al.: CHES = <sum h+, sum h-> - ||sum h+||^2
    return (sum_chosen * sum_rejected).sum(1) - (sum_chosen * sum_chosen).sum(1)
