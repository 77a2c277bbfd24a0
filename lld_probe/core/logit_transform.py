"""The map from the output embedding's product u = W h to the model's logits (before the temperature).

Most causal LMs use logits = u. Some transform it elementwise: Gemma-2/3 soft-cap it (cap * tanh(u / cap)),
Cohere multiplies by logit_scale, Granite divides by logits_scaling. One form covers them all:
    logits = softcap * tanh(scale * u / softcap)      (softcap None: logits = scale * u).
The policy is pi = softmax(logits / temperature), and the gradient of log pi(y) with respect to u is
(e_y - pi) * logits'(u) / temperature: the interaction kernel uses the error vector g = (e_y - pi) * logits'(u)
(the temperature factor is left out, as for the plain form)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LogitTransform:
    scale: float = 1.0
    softcap: float | None = None

    def __post_init__(self):
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"logit scale must be a positive finite number, got {self.scale!r}")
        if self.softcap is not None and (not math.isfinite(self.softcap) or self.softcap <= 0):
            raise ValueError(f"logit softcap must be a positive finite number or None, got {self.softcap!r}")

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.softcap is None

    def logits(self, products: torch.Tensor) -> torch.Tensor:
        """The model's logits from u = W h (any shape)."""
        if self.softcap is None:
            return products * self.scale if self.scale != 1.0 else products
        return self.softcap * torch.tanh(products * (self.scale / self.softcap))

    def slope(self, products: torch.Tensor) -> torch.Tensor | None:
        """d logits / d u elementwise (None for the identity: the plain kernel)."""
        if self.is_identity:
            return None
        if self.softcap is None:
            return torch.full_like(products, self.scale)
        # d/du [c tanh(s u / c)] = s (1 - tanh^2(s u / c))
        return self.scale * (1.0 - torch.tanh(products * (self.scale / self.softcap)) ** 2)

    def describe(self) -> str:
        parts = ([f"scale {self.scale:g}"] if self.scale != 1.0 else []) + \
                ([f"softcap {self.softcap:g}"] if self.softcap is not None else [])
        return ", ".join(parts) or "identity"


IDENTITY = LogitTransform()


def as_transform(transform: LogitTransform | None) -> LogitTransform:
    """None means the plain form logits = W h."""
    if transform is None:
        return IDENTITY
    if not isinstance(transform, LogitTransform):
        raise ValueError(f"logit_transform must be a LogitTransform or None, got {type(transform).__name__}")
    return transform
