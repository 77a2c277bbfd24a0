"""The step's scalars (TRL metrics `lld/...`), over all processes' responses: a rate over every response
of the step, not a mean of per-process rates."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..core import lld_rate
from .records import ProbedBatch


def step_metrics(probed: ProbedBatch | Sequence[ProbedBatch], delta: torch.Tensor | Sequence[torch.Tensor],
                 comm) -> dict:
    """lld/rate (share of measured correct responses with Delta <= 0), lld/delta_correct,
    lld/delta_incorrect, lld/scaled_fraction (share of a measured incorrect response's tokens that the
    method scaled, averaged over those responses),
    lld/tau (mean over groups with a threshold), lld/mean_length (measured tokens, over responses that have
    some), and lld/left_out (responses without measured tokens: truncated and masked); absent when there is
    none. Lengths count measured tokens only (not a tool's output inside a completion).
    With a separate sampling engine: lld/sampler_gap_mean and lld/sampler_gap_max (|log pi_sampler - log pi_old|
    per measured token the sampler gave a log-prob for, pi_old as the probes scored it) and
    lld/sampler_zeroed_tokens (measured tokens the trainer's importance sampling took out of the update).
    Several batches finished by one step (a sequence of them and of their deltas) are pooled."""
    batches = [probed] if isinstance(probed, ProbedBatch) else list(probed)
    deltas = [delta] if isinstance(delta, torch.Tensor) else list(delta)
    lengths = torch.cat([b.generation.batch.measured.sum(1) for b in batches])
    local = {"delta": torch.cat(deltas), "correct": torch.cat([b.generation.correct for b in batches]),
             "lengths": lengths,
             "scaled_fraction": torch.cat([b.scaled.sum(1).float() for b in batches]) / lengths.clamp(min=1),
             "taus": {(i, group): tau for i, b in enumerate(batches) for group, tau in b.old.taus.items()},
             "sampler": _pooled_sampler_gap(batches)}
    parts = comm.all_gather_object(local, purpose="metrics") if comm.world_size > 1 else [local]
    delta = torch.cat([p["delta"] for p in parts])
    correct = torch.cat([p["correct"] for p in parts])
    lengths = torch.cat([p["lengths"] for p in parts])
    scaled_fraction = torch.cat([p["scaled_fraction"] for p in parts])
    taus = {group: tau for p in parts for group, tau in p["taus"].items()}   # a split group once
    metrics = {}
    measured = ~torch.isnan(delta)
    correct_measured = correct & measured
    if correct_measured.any():
        metrics["lld/rate"] = lld_rate(delta[correct_measured].numpy())
        metrics["lld/delta_correct"] = float(delta[correct_measured].mean())
    incorrect_measured = ~correct & measured
    if incorrect_measured.any():
        metrics["lld/delta_incorrect"] = float(delta[incorrect_measured].mean())
        metrics["lld/scaled_fraction"] = float(scaled_fraction[incorrect_measured].mean())
    finite = [taus[g] for g in sorted(taus) if math.isfinite(taus[g])]
    if finite:
        metrics["lld/tau"] = float(np.mean(finite))
    with_tokens = lengths > 0
    if with_tokens.any():
        metrics["lld/mean_length"] = float(lengths[with_tokens].float().mean())
    if not bool(with_tokens.all()):       # truncated (masked) or empty responses: outside every LLD statistic
        metrics["lld/left_out"] = float((~with_tokens).sum())
    sampler = [p["sampler"] for p in parts if p["sampler"] is not None]
    if sampler:
        total, count = sum(s["sum"] for s in sampler), sum(s["count"] for s in sampler)
        if count:
            metrics["lld/sampler_gap_mean"] = total / count
            metrics["lld/sampler_gap_max"] = max(s["max"] for s in sampler if s["count"])
        metrics["lld/sampler_zeroed_tokens"] = float(sum(s["zeroed"] for s in sampler))
    return metrics


def _sampler_gap(probed: ProbedBatch) -> dict | None:
    """This process's sum, count and max of |log pi_sampler - log pi_old| over its measured tokens with a
    sampler log-prob (float64), and its zeroed-token count; None without a sampling engine's log-probs."""
    generation = probed.generation
    sampler = generation.sampler_token_logps
    if sampler is None and not generation.sampler_zeroed_tokens:
        return None
    gap = torch.zeros(0, dtype=torch.float64)
    if sampler is not None:
        known = generation.batch.measured & ~torch.isnan(sampler)
        gap = (sampler.double() - probed.old.token_logps.double().cpu()).abs()[known]
    return {"sum": float(gap.sum()), "count": int(gap.numel()), "max": float(gap.max()) if gap.numel() else 0.0,
            "zeroed": int(generation.sampler_zeroed_tokens)}


def _pooled_sampler_gap(batches) -> dict | None:
    """_sampler_gap over several batches of this process: sums, counts and zeroed tokens added, the max of maxima."""
    parts = [gap for gap in map(_sampler_gap, batches) if gap is not None]
    if not parts:
        return None
    return {"sum": sum(p["sum"] for p in parts), "count": sum(p["count"] for p in parts),
            "max": max(p["max"] for p in parts), "zeroed": sum(p["zeroed"] for p in parts)}
