"""Test conveniences shared by several test files."""

from __future__ import annotations

from dataclasses import fields


def train_settings(**values):
    """TrainSettings from flat keywords: ProbeSettings' fields (method, eval_every, probe_every, ...) go into
    its `probe`, the rest stay on the TrainSettings."""
    from lld_probe.integrations.trl.run import TrainSettings
    from lld_probe.probes import ProbeSettings
    probe_names = {f.name for f in fields(ProbeSettings)} - {f.name for f in fields(TrainSettings)}
    probe = {k: values.pop(k) for k in list(values) if k in probe_names}
    return TrainSettings(**values, probe=ProbeSettings(**probe))
