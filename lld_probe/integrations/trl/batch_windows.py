"""When TRL is done with a generation batch, and how many optimizer steps the probes' Delta of it spans.

TRL's GRPOTrainer generates when its micro-step counter `_step` is a multiple of generate_every =
steps_per_generation * num_iterations (or when it has no buffered batch, after a resume), then feeds the
batch's steps_per_generation slices, num_iterations times over: the batch generated at micro-step g is last
used by micro-step end - 1, end = (g // generate_every + 1) * generate_every. The optimizer steps after
every gradient_accumulation_steps micro-steps, so the batch is finished (its record taken) at the first
optimizer step with `_step >= end`. Its old policy is the parameters at generation: after optimizer step
g // gradient_accumulation_steps.
"""

from __future__ import annotations

import math


def batch_end(generated_at: int, generate_every: int) -> int:
    """The micro-step count at which TRL is done with a batch generated at micro-step generated_at."""
    return (generated_at // generate_every + 1) * generate_every


def window_steps(generated_at: int, generate_every: int, accumulation: int) -> int:
    """Optimizer steps between a batch's old policy and the optimizer step that finishes it."""
    finished = -(-batch_end(generated_at, generate_every) // accumulation)      # ceil
    return finished - generated_at // accumulation


def run_windows(steps_per_generation: int, num_iterations: int, accumulation: int) -> set[int]:
    """Every window a run of these settings gives its batches (the pattern repeats every lcm micro-steps)."""
    every = steps_per_generation * num_iterations
    period = math.lcm(every, accumulation)
    return {window_steps(g, every, accumulation) for g in range(0, period, every)}
