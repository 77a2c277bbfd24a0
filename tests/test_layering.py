"""The package's layering, checked against the table in docs/design.md: every import of lld_probe (lazy
ones inside functions included) goes to a unit listed before the importing one and named in its row, and
training frameworks are imported only where the table says; the recorder and the math import no training
framework at run time either."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lld_probe"
FRAMEWORKS = {"trl", "verl", "transformers", "accelerate", "deepspeed", "peft", "datasets"}


def _design_table() -> list[tuple[list[str], set, set]]:
    """Rows of the layering table: (units, lld_probe units imported, outside packages imported)."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text[text.index("## Layers"): text.index("## One owner per convention")]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        units = re.findall(r"`([\w_]+)`", cells[0])
        inside = set() if cells[2] == "-" else {u.strip() for u in cells[2].split(",")}
        outside = set() if cells[3] == "-" else {u.strip() for u in cells[3].split(",")}
        rows.append((units, inside, outside))
    assert rows, "docs/design.md has no layering table"
    return rows


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imports() -> tuple[dict, dict]:
    """unit -> {(imported unit, file)} and unit -> {(outside package, file)}, from every file's source."""
    inside, outside = defaultdict(set), defaultdict(set)
    for file in PACKAGE.rglob("*.py"):
        unit = _unit(file)
        module = list(file.relative_to(ROOT).with_suffix("").parts)
        package = module[:-1]
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    names = [".".join(base + ([node.module] if node.module else []))]
                else:
                    names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "lld_probe" and len(parts) > 1 and parts[1] != unit:
                    inside[unit].add((parts[1], str(file.relative_to(ROOT))))
                elif parts[0] != "lld_probe":
                    outside[unit].add((parts[0], str(file.relative_to(ROOT))))
    return inside, outside


def test_every_unit_of_the_package_is_in_the_table():
    listed = {unit for units, _, _ in _design_table() for unit in units}
    actual = {_unit(f) for f in PACKAGE.rglob("*.py") if _unit(f) != "__init__"}
    assert actual <= listed, f"units missing from docs/design.md's layering table: {sorted(actual - listed)}"


def test_imports_follow_the_layering_table():
    rows = _design_table()
    order = {unit: index for index, (units, _, _) in enumerate(rows) for unit in units}
    allowed = {unit: inside for units, inside, _ in rows for unit in units}
    inside, _ = _imports()
    wrong = []
    for unit, edges in inside.items():
        for target, file in sorted(edges):
            everything = "everything above" in allowed[unit]
            if target not in order or order[target] >= order[unit] or (target not in allowed[unit] and not everything):
                wrong.append(f"{file}: {unit} imports {target}")
    assert not wrong, "imports that docs/design.md's layering table does not allow:\n" + "\n".join(wrong)


def test_training_frameworks_only_where_the_table_says():
    allowed = {unit: outside for units, _, outside in _design_table() for unit in units}
    _, outside = _imports()
    wrong = [f"{file}: {unit} imports {package}" for unit, edges in outside.items() for package, file in sorted(edges)
             if package in FRAMEWORKS and package not in allowed[unit]]
    assert not wrong, "framework imports the layering table does not allow:\n" + "\n".join(wrong)


def _imported_after(statement: str) -> set:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["lld_probe.core", "lld_probe.probes", "lld_probe.protocol", "lld_probe.analysis"])
def test_only_the_integration_imports_trl(module):
    assert "trl" not in _imported_after(f"import {module}")


def test_the_math_core_imports_no_transformers():
    assert "transformers" not in _imported_after("import lld_probe.core")
