"""Deprecated alias of lld_probe.core.variants."""

import warnings

from lld_probe.core.variants import *  # noqa: F401,F403

warnings.warn("lld_probe.trainers.variants moved to lld_probe.core.variants", DeprecationWarning, stacklevel=2)
