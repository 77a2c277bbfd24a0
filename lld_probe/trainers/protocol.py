"""Deprecated alias of lld_probe.protocol."""

import warnings

from lld_probe.protocol import *  # noqa: F401,F403

warnings.warn("lld_probe.trainers.protocol moved to lld_probe.protocol", DeprecationWarning, stacklevel=2)
