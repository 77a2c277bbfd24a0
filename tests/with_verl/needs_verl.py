"""Skip a test module cleanly where verl is not installed (the main environment): verl 0.9.1 pins
transformers<5.11 and lives in its own environment, .venv-verl."""

import pytest

REASON = ("verl is not installed in this environment: the verl tests run in .venv-verl "
          "(LLD_PROBE_VERL=1 bash scripts/install.sh; .venv-verl/bin/python -m pytest -o addopts='' tests/with_verl)")


def require_verl():
    pytest.importorskip("verl.protocol", reason=REASON)      # the real package, not a folder named verl
    import verl
    return verl
