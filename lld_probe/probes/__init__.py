"""Likelihood probes around each GRPO update, independent of any training framework: the recorder, its
immutable records and settings, and the processes' layout (docs/design.md: data flow of one step)."""

from .distributed import RowLayout, SingleProcess, TorchDistributed, communicator_for
from .records import GenerationBatch, OldPolicyScores, ProbedBatch, StepRecord
from .recorder import ProbeRecorder
from .settings import ProbeSettings

__all__ = ["GenerationBatch", "OldPolicyScores", "ProbeRecorder", "ProbeSettings", "ProbedBatch", "RowLayout",
           "SingleProcess", "StepRecord", "TorchDistributed", "communicator_for"]
