"""LLDConfig: TRL's GRPOConfig plus the method and the probes, one documented config for a run.

Its extra fields are ProbeSettings' user fields (lld_probe.probes.settings), taken from there with their
names, defaults and help texts: the probes' settings are defined once. TRL's parser and `lld-probe train
--help` show them as TRL shows its own. The NTHR threshold factor is `nthr_beta`: TRL's own `beta` is the
KL coefficient.
"""

from __future__ import annotations

import dataclasses

from trl import GRPOConfig

from ...probes import ProbeSettings
from ...probes.settings import user_fields

_CLASH = sorted({f.name for f in user_fields()} & {f.name for f in dataclasses.fields(GRPOConfig)})
if _CLASH:
    raise ImportError(f"TRL's GRPOConfig now has fields {_CLASH} that lld_probe's ProbeSettings also defines: "
                      f"this version of TRL is not supported (pyproject pins trl<1.17)")


def _post_init(self):
    GRPOConfig.__post_init__(self)
    self.probe_settings()         # every probe setting checked when the config is made


def probe_settings(self, **internal) -> ProbeSettings:
    """The recorder's settings of this run (internal ones, such as extra_meta, passed as keywords)."""
    return ProbeSettings(**{f.name: getattr(self, f.name) for f in user_fields()}, seed=self.seed, **internal)


LLDConfig = dataclasses.make_dataclass(
    "LLDConfig",
    [(f.name, f.type, dataclasses.field(default=f.default, metadata=dict(f.metadata))) for f in user_fields()],
    bases=(GRPOConfig,),
    namespace={"__post_init__": _post_init, "probe_settings": probe_settings, "__module__": __name__,
               "__doc__": "TRL's GRPOConfig + ProbeSettings' fields (method, nthr_*, probe_*, eval_every, "
                          "correct_*): one config for a probed run."})
