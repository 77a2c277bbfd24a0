"""Each setting is defined once: the command line and TRL's config show the Python defaults and help texts of
the settings dataclasses, for every field."""

from __future__ import annotations

import dataclasses

import pytest

from lld_probe.cli import build_parser
from lld_probe.options import option_fields


def _subparser(name):
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    return action.choices[name]


@pytest.mark.parametrize("command,cls_path", [("train", "lld_probe.integrations.trl.run.TrainSettings"),
                                              ("protocol", "lld_probe.protocol.ProtocolConfig")])
def test_every_option_shows_the_python_default(command, cls_path):
    import importlib
    module, name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    parser = _subparser(command)
    parsed = parser.parse_args([])
    instance = cls()
    help_text = " ".join(parser.format_help().split())
    for field, path in option_fields(cls):
        owner = instance
        for part in path:
            owner = getattr(owner, part)
        assert getattr(parsed, field.name) == getattr(owner, field.name), f"--{field.name} default differs"
        assert f"(default: {getattr(owner, field.name)})" in help_text, f"--{field.name} help lacks its default"
        assert " ".join(field.metadata["help"].split())[:40] in help_text, f"--{field.name} help is not the field's"


def test_lld_config_takes_its_probe_fields_from_probe_settings():
    from lld_probe.integrations.trl import LLDConfig
    from lld_probe.probes import ProbeSettings
    from lld_probe.probes.settings import user_fields
    config_fields = {f.name: f for f in dataclasses.fields(LLDConfig)}
    for field in user_fields(ProbeSettings):
        mine = config_fields[field.name]
        assert mine.default == field.default and mine.metadata["help"] == field.metadata["help"], field.name
    config = LLDConfig(output_dir="unused", method="random", probe_every=3, use_cpu=True, bf16=False, report_to=[])
    settings = config.probe_settings()
    assert (settings.method, settings.probe_every, settings.seed) == ("random", 3, config.seed)


def test_a_bad_setting_is_refused_when_the_config_is_made():
    from lld_probe.integrations.trl import LLDConfig
    with pytest.raises(ValueError, match="probe_every must be >= 1, got 0"):
        LLDConfig(output_dir="unused", probe_every=0, use_cpu=True, bf16=False, report_to=[])
    with pytest.raises(ValueError, match="nthr_vocab must be 'full' or 'group'"):
        LLDConfig(output_dir="unused", nthr_vocab="all", use_cpu=True, bf16=False, report_to=[])
