"""The notebooks run by nbmake carry the `notebook` marker (nbmake's items take no decorators)."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
