"""Deprecated alias of lld_probe.integrations.trl.adapter."""

import warnings

from lld_probe.integrations.trl.adapter import *  # noqa: F401,F403

warnings.warn("lld_probe.trainers.probes moved to lld_probe.integrations.trl.adapter", DeprecationWarning, stacklevel=2)
from lld_probe.probes.settings import ProbeSettings  # noqa: E402,F401
