"""Time spent inside the probes, for the overhead figures (lld-probe bench probes)."""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager


class Clock:
    def __init__(self):
        self.seconds = 0.0

    @contextmanager
    def measure(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


def timed(method):
    """Count a method's time on its object's `clock`."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.clock.measure():
            return method(self, *args, **kwargs)
    return wrapper
