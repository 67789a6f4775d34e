"""Declared runtime dependencies match what `ci/` imports: nothing undeclared, nothing unused,
and the example's ML libraries (scikit-learn) are not pulled by `pip install .`."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# distribution name → the top-level module it provides, where they differ
MODULE_OF = {"dagger-io": "dagger", "ruamel.yaml": "ruamel", "scikit-learn": "sklearn"}


def _declared() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0] for d in data["project"]["dependencies"]]
    return {n: MODULE_OF.get(n, n.replace("-", "_")) for n in names}


def _imported() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "ci").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
    return {m for m in found if m not in sys.stdlib_module_names and m != "ci"}


def test_every_import_is_declared_and_every_declaration_imported() -> None:
    declared = _declared()
    imported = _imported()
    assert sorted(imported - set(declared.values())) == [], "imported but not declared"
    assert sorted(d for d, m in declared.items() if m not in imported) == [], \
        "declared but never imported by ci/"


def test_the_library_pulls_no_example_ml_libraries() -> None:
    assert "scikit-learn" not in _declared()
    assert "python-on-whales" not in _declared()
