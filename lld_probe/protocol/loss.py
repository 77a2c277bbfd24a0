"""The GRPO policy loss used by the per-question protocol (TRL's trainer uses TRL's own)."""

from __future__ import annotations

import torch


def clipped_surrogate_loss(logps: torch.Tensor, old_logps: torch.Tensor, token_advantages: torch.Tensor,
                           mask: torch.Tensor, *, clip_eps: float = 0.2) -> torch.Tensor:
    """-(1/sum mask) sum_t min(r_t A_t, clip(r_t, 1-eps, 1+eps) A_t), r_t = pi/pi_old per token.

    PAPER (GRPO): clipped-ratio PPO surrogate with token-mean normalisation over the group. The KL
    term is omitted: at the first step the policy equals the reference and its gradient is 0.
    """
    ratio = torch.exp(logps - old_logps.detach())
    unclipped = ratio * token_advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * token_advantages
    per_token = -torch.minimum(unclipped, clipped)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)
