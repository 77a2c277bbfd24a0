"""Deprecated alias of lld_probe.integrations.trl.trainer."""

import warnings

from lld_probe.integrations.trl.trainer import *  # noqa: F401,F403

warnings.warn("lld_probe.trainers.lld_trainer moved to lld_probe.integrations.trl.trainer", DeprecationWarning, stacklevel=2)
from lld_probe.integrations.trl.config import LLDConfig  # noqa: E402,F401
