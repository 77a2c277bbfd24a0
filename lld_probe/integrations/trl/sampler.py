"""The sampler's side of a run whose completions come from another engine (TRL's use_vllm): what TRL's
importance-sampling correction masks out, and the sampler's own log-probs of the sampled tokens.

TRL (vllm_importance_sampling_correction) weights each loss token by importance_sampling_ratio, exp(log
pi_old - log pi_sampler): [B, T] in the token_* modes, [B, 1] in the sequence_* modes; the *_mask modes set
it to 0 outside [clip_min, clip_max], which takes the token (or the whole response) out of the update.
- A response whose ratio is 0 on every loss token (sequence_mask: its one ratio) gets no gradient: the probes
  leave it out of the LLD statistics as they do a truncated one (no measured tokens, `sampler_masked` True
  in the responses, counted in lld/left_out).
- Single tokens with ratio 0 in a response that keeps others (token_mask) stay measured: their likelihood is
  still part of the response's; only their count is reported (lld/sampler_zeroed_tokens).
- sampling_per_token_logps (vLLM's log-probs of the sampled tokens, after temperature) are kept with the
  batch: the recorder reports the gap |log pi_sampler - log pi_old| per measured token (lld/sampler_gap_mean,
  lld/sampler_gap_max), with log pi_old the probes' own old-policy log-probs: the likelihoods whose change LLD
  measures (TRL's own sampling/sampling_logp_difference compares with its old_per_token_logps instead).
"""

from __future__ import annotations

from dataclasses import replace

import torch


def _loss_mask(output) -> torch.Tensor:
    """The tokens TRL's loss and importance ratio cover: completion_mask, times tool_mask when there is one."""
    mask = output["completion_mask"].bool()
    tool_mask = output.get("tool_mask")
    return mask if tool_mask is None else mask & tool_mask.bool()


def sampler_masked(output) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(responses [B] whose every loss token has importance ratio 0, tokens [B, T] with ratio 0 in the other
    responses); None without TRL's importance-sampling correction."""
    ratio = output.get("importance_sampling_ratio")
    if ratio is None:
        return None
    ratio, mask = ratio.detach().cpu(), _loss_mask(output).cpu()
    zero = (ratio == 0).expand_as(mask) & mask
    whole = mask.any(1) & (zero == mask).all(1)
    return whole, zero & ~whole[:, None]


def leave_out_sampler_masked(output, completion_ids: list) -> tuple[list, list]:
    """(the completions with the responses TRL's importance sampling masks out emptied, like truncated ones: no
    measured tokens; a flag per response, True for those)."""
    masked = sampler_masked(output)
    if masked is None or not masked[0].any():
        return completion_ids, [False] * len(completion_ids)
    whole = masked[0].tolist()
    return [[] if out else ids for ids, out in zip(completion_ids, whole)], whole


def with_sampler_side(generation, output):
    """The GenerationBatch with the sampler's log-probs of its measured tokens ([B, T], NaN where the sampler
    gave none) and the count of single tokens TRL's importance sampling zeroed; unchanged without a sampler."""
    logps = output.get("sampling_per_token_logps")
    masked = sampler_masked(output)
    if logps is None and masked is None:
        return generation
    mask = generation.batch.measured
    sampler = None
    if logps is not None:
        width = mask.shape[1]
        sampler = torch.full(mask.shape, float("nan"))
        sampler[:, : min(width, logps.shape[1])] = logps.detach().float().cpu()[:, :width]
        sampler = sampler.masked_fill(~mask, float("nan"))
    zeroed = int(masked[1].sum()) if masked is not None else 0
    return replace(generation, sampler_token_logps=sampler, sampler_zeroed_tokens=zeroed)
