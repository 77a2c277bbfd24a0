"""Which checkpoints bracket each logged step.

A generation batch sampled by the policy after optimizer step g is used by the optimizer steps g+1 .. g+span.
Its Delta is measured between the latest checkpoint at or before g (logp_before) and the earliest one at
or after g+span (logp_after): one update's Delta when checkpoints are consecutive (the probes' Delta), the
window's otherwise (window_steps = after - before optimizer steps). Checkpoint 0 is the initial model.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    step: int             # the store's step: the last optimizer step that used the batch, after which logp_after
                          # is measured (as the probes label it)
    logged_step: int      # the step under which the log holds the batch
    before: int           # checkpoint (optimizer step) giving logp_before
    after: int            # checkpoint giving logp_after

    @property
    def window_steps(self) -> int:
        return self.after - self.before


def sampled_at(logged_step: int, span: int) -> int:
    """The optimizer step after which the batch logged at logged_step was sampled (its generation cycle's start)."""
    return ((logged_step - 1) // span) * span


def plan_windows(logged_steps, checkpoints, span: int = 1) -> tuple[list[Window], dict]:
    """(windows in step order, {logged step: why it is skipped}). A batch logged under several steps (a
    generation batch reused for span > 1 optimizer steps, logged after each) is taken once."""
    available = sorted(set(int(c) for c in checkpoints))
    windows, skipped, seen = [], {}, set()
    for logged in sorted(int(s) for s in logged_steps):
        start = sampled_at(logged, span)
        if start in seen:
            skipped[logged] = f"the same generation batch as logged step {start + 1}"
            continue
        seen.add(start)
        end = start + span
        at = bisect.bisect_right(available, start)
        before = available[at - 1] if at else None
        at = bisect.bisect_left(available, end)
        after = available[at] if at < len(available) else None
        if before is None:
            skipped[logged] = (f"no checkpoint at or before step {start} (the policy that sampled it"
                               + ("; give the initial model: --initial-model)" if start == 0 else ")"))
        elif after is None:
            skipped[logged] = f"no checkpoint at or after step {end}"
        else:
            windows.append(Window(end, logged, before, after))
    return windows, skipped
