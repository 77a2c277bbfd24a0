"""Immutable records of one generation batch as it passes through the probes:
GenerationBatch (sampled, rewarded) -> ProbedBatch (+ the old policy's scores and the method's
advantages) -> StepRecord (+ the likelihoods after the update: the rows written to the run store)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..scoring import GroupBatch
from .distributed import RowLayout


@dataclass(frozen=True)
class GenerationBatch:
    """This process's rows of one generation batch, in generation order."""
    step: int                       # the optimizer step that will use it
    batch: GroupBatch               # prompt + completion token layout [B, T]
    layout: RowLayout               # where these rows sit among all processes' rows
    rewards: torch.Tensor           # [B] the reward as the trainer logs it (weighted sum of reward functions)
    correct: torch.Tensor           # [B] bool
    group_correct: dict             # group index -> [G] bool: correctness of the whole group (all processes)
    advantages: torch.Tensor        # [B] sequence advantages as the trainer computed them
    prompts: tuple
    completions: tuple
    question_ids: tuple
    rescored: torch.Tensor          # [B] bool: re-scored after the step (logp_after measured)
    truncated: torch.Tensor         # [B] bool: cut at the length limit and masked out of the loss (no tokens)
    sampler_masked: torch.Tensor | None = None        # [B] bool: out of the update by importance sampling (no tokens)
    sampler_token_logps: torch.Tensor | None = None   # [B, T] the sampling engine's log-probs (NaN: none)
    sampler_zeroed_tokens: int = 0  # measured tokens the trainer's importance sampling took out of the update

    @property
    def size(self) -> int:
        return self.batch.size

    @property
    def group_size(self) -> int:
        return self.layout.group_size


@dataclass(frozen=True)
class OldPolicyScores:
    """The old policy on the batch: what a separate scoring forward or the training forward saw."""
    token_logps: torch.Tensor       # [B, T] log pi_old(y_t), 0 off the measured tokens (batch.measured)
    logp_before: torch.Tensor       # [B] sequence sums; NaN for a response without measured tokens
    entropy: torch.Tensor           # [B, T], 0 off the measured tokens
    scores: torch.Tensor            # [B, T] NTHR scores
    nthr_selected: torch.Tensor     # [B, T] NTHR's selection (incorrect responses only)
    taus: dict                      # group index -> tau of the group


@dataclass(frozen=True)
class ProbedBatch:
    """A generation batch with the old policy's scores and the method's weighting, awaiting its update."""
    generation: GenerationBatch
    old: OldPolicyScores
    loss_advantages: torch.Tensor   # what the loss gets: [B] (sequence-level methods) or [B, T]
    scaled: torch.Tensor            # [B, T] tokens whose advantage the method scaled (by eta)

    # read-through views of the parts, for analysis code and tests
    batch = property(lambda self: self.generation.batch)
    correct = property(lambda self: self.generation.correct)
    advantages = property(lambda self: self.generation.advantages)
    nthr_selected = property(lambda self: self.old.nthr_selected)
    scores = property(lambda self: self.old.scores)
    entropy = property(lambda self: self.old.entropy)
    token_logps_before = property(lambda self: self.old.token_logps)


@dataclass(frozen=True)
class StepRecord:
    """What one optimizer step adds to the run store, and the metrics it reports (all processes)."""
    step: int
    responses: pd.DataFrame
    tokens: pd.DataFrame | None
    metrics: dict
    probed: ProbedBatch             # the newest batch the step finished
    batches: tuple = ()             # every batch the step finished, oldest first (usually one)
