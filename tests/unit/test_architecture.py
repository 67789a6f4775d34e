"""The layer rule of ARCHITECTURE.md, checked on the source: imports point one way only.

    core → adapters → stages → pipelines → reports → commands → cli

A module may import its own layer or a lower one, never a higher one; no two modules may
import each other through any chain (lazy imports and TYPE_CHECKING imports count: they
are dependencies too). Core stays pure: stdlib, pydantic and ruamel.yaml (text only).
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "ci"
LAYERS = ["core", "adapters", "stages", "pipelines", "reports", "commands", "cli"]
TOP = {"ci", "ci.__main__"}  # the package root re-exports lazily; __main__ runs cli
CORE_THIRD_PARTY = {"pydantic", "ruamel"}
REPORTS_MAY_IMPORT = {"core", "reports"}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if module in TOP or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(ci modules imported, top-level third-party names imported) by one file."""
    tree = ast.parse(path.read_text())
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "ci" or node.module.startswith("ci."):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    ours.add(full if (ROOT.parent / (full.replace(".", "/") + ".py")).exists()
                             or (ROOT.parent / full.replace(".", "/")).is_dir()
                             else node.module)
            else:
                theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "ci" or alias.name.startswith("ci."):
                    ours.add(alias.name)
                else:
                    theirs.add(alias.name.split(".")[0])
    return ours, theirs


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        ours, _ = _imports(path)
        graph[_module(path)] = {m for m in ours if m != _module(path)}
    return graph


def _violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, deps in graph.items():
        layer = _layer(mod)
        if layer is None:
            continue
        for dep in deps:
            dep_layer = _layer(dep)
            if dep_layer is None:
                if dep == "ci" and mod != "ci.cli":
                    out.append(f"{mod} imports the package root (import the module instead)")
                continue
            if LAYERS.index(dep_layer) > LAYERS.index(layer):
                out.append(f"{mod} ({layer}) imports {dep} ({dep_layer}): upward")
            if layer == "reports" and dep_layer not in REPORTS_MAY_IMPORT:
                out.append(f"{mod} (reports) imports {dep}: reports read core data only")
    return sorted(out)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer() -> None:
    stray = [m for m in _graph() if m not in TOP and _layer(m) not in LAYERS]
    assert stray == [], f"modules outside the layers of ARCHITECTURE.md: {stray}"


def test_imports_point_downward_only() -> None:
    assert _violations(_graph()) == []


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_core_is_pure() -> None:
    allowed = set(sys.stdlib_module_names) | CORE_THIRD_PARTY | {"ci"}
    bad = {}
    for path in sorted((ROOT / "core").rglob("*.py")):
        _, theirs = _imports(path)
        extra = sorted(theirs - allowed)
        if extra:
            bad[_module(path)] = extra
    assert bad == {}, f"core imports tools/libraries: {bad}"


def test_module_sizes() -> None:
    sizes = {_module(p): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")
             if p.name != "__init__.py" or p.parent == ROOT}
    assert max(sizes.values()) <= 500, max(sizes.items(), key=lambda kv: kv[1])
    assert statistics.median(sizes.values()) <= 250


@pytest.mark.parametrize("case", ["upward", "cycle", "reports"])
def test_the_checks_catch_what_they_claim(case: str) -> None:
    """The rule itself can fail: fed a bad graph, each check reports it."""
    if case == "upward":
        graph = {"ci.core.a": {"ci.stages.b"}, "ci.stages.b": set()}
        assert _violations(graph) == ["ci.core.a (core) imports ci.stages.b (stages): upward"]
    elif case == "cycle":
        graph = {"ci.stages.a": {"ci.stages.b"}, "ci.stages.b": {"ci.stages.a"}}
        assert _cycles(graph) == [["ci.stages.a", "ci.stages.b"]]
    else:
        graph = {"ci.reports.a": {"ci.stages.b"}, "ci.stages.b": set()}
        assert _violations(graph) == [
            "ci.reports.a (reports) imports ci.stages.b: reports read core data only"]


def test_no_assert_in_the_library() -> None:
    """`python -O` strips asserts: no promise (stage order, gates) may rest on one."""
    found = [f"{_module(p)}:{n.lineno}" for p in sorted(ROOT.rglob("*.py"))
             for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Assert)]
    assert found == []
