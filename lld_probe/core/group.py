"""Validation of one group's tensors (hidden, unembed, tokens, mask, correct) and its vocabulary."""

from __future__ import annotations

import torch

from ._checks import check_positive, check_shape, check_tensor

VOCAB_MODES = ("full", "group")


def check_group(hidden, unembed, tokens, mask, correct=None, *, temperature=1.0, token_logprobs=None):
    """Raise ValueError naming the argument unless the group's tensors fit the group layout ([G, T(, d)], docs/design.md)."""
    check_tensor("hidden", hidden, ndim=3, dtype="float", finite=True)
    check_tensor("unembed", unembed, ndim=2, dtype="float", finite=True)
    check_tensor("tokens", tokens, ndim=2, dtype="long")
    check_tensor("mask", mask, ndim=2, dtype="bool")
    n_groups, length, dim = hidden.shape
    if unembed.shape[1] != dim:
        raise ValueError(f"unembed must have shape [V, {dim}] to match hidden's last dimension, "
                         f"got {tuple(unembed.shape)}")
    check_shape("tokens", tokens, (n_groups, length))
    check_shape("mask", mask, (n_groups, length))
    if correct is not None:
        check_tensor("correct", correct, ndim=1, dtype="bool")
        check_shape("correct", correct, (n_groups,))
    check_positive("temperature", temperature)
    used = tokens[mask]
    if used.numel() and (int(used.min()) < 0 or int(used.max()) >= unembed.shape[0]):
        raise ValueError(f"tokens under mask must lie in [0, {unembed.shape[0]}) (rows of unembed)")
    if token_logprobs is not None:
        check_tensor("token_logprobs", token_logprobs, ndim=2, dtype="float")
        check_shape("token_logprobs", token_logprobs, (n_groups, length))
        if not bool(torch.isfinite(token_logprobs[mask]).all()):
            raise ValueError("token_logprobs contains non-finite values under mask")


def vocab_columns(tokens: torch.Tensor, mask: torch.Tensor, vocab: str) -> torch.Tensor | None:
    """The columns the error vectors keep: None for "full", the sorted tokens seen in the group (V*)
    for "group"."""
    if vocab == "full":
        return None
    if vocab == "group":
        return torch.unique(tokens[mask])
    raise ValueError(f"vocab must be one of {VOCAB_MODES}, got {vocab!r}")
