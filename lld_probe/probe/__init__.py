"""Deprecated alias of lld_probe.scoring (batch layout, scoring forwards, hidden-state hooks)."""

import warnings

from lld_probe.scoring import *  # noqa: F401,F403
from lld_probe.scoring import __all__  # noqa: F401

warnings.warn("lld_probe.probe moved to lld_probe.scoring", DeprecationWarning, stacklevel=2)
