"""Deprecated alias of lld_probe.integrations.trl.run."""

import warnings

from lld_probe.integrations.trl.run import *  # noqa: F401,F403

warnings.warn("lld_probe.trainers.train moved to lld_probe.integrations.trl.run", DeprecationWarning, stacklevel=2)
