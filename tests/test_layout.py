"""The package's layering: the recorder and the math import no training framework, the analysis imports no
model code, old import paths still work for a release (with a DeprecationWarning)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _imported_after(statement: str) -> set:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["lld_probe.core", "lld_probe.probes", "lld_probe.protocol", "lld_probe.analysis"])
def test_only_the_integration_imports_trl(module):
    assert "trl" not in _imported_after(f"import {module}")


def test_the_math_core_imports_no_transformers():
    assert "transformers" not in _imported_after("import lld_probe.core")


def test_old_import_paths_warn_and_give_the_same_objects():
    from lld_probe.integrations.trl.config import LLDConfig
    from lld_probe.probes import ProbeSettings
    from lld_probe.protocol import run_protocol
    with pytest.warns(DeprecationWarning, match="moved to lld_probe.integrations.trl.config"):
        from lld_probe.trainers import LLDConfig as old_config
    with pytest.warns(DeprecationWarning, match="moved to lld_probe.probes.settings"):
        from lld_probe.trainers import ProbeSettings as old_settings
    assert old_config is LLDConfig and old_settings is ProbeSettings
    import importlib
    sys.modules.pop("lld_probe.trainers.protocol", None)
    with pytest.warns(DeprecationWarning, match="lld_probe.trainers.protocol moved to lld_probe.protocol"):
        old = importlib.import_module("lld_probe.trainers.protocol")
    assert old.run_protocol is run_protocol
    sys.modules.pop("lld_probe.probe", None)
    with pytest.warns(DeprecationWarning, match="lld_probe.probe moved to lld_probe.scoring"):
        old_scoring = importlib.import_module("lld_probe.probe")
    from lld_probe.scoring import score_group
    assert old_scoring.score_group is score_group
