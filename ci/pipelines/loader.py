"""Find a pipeline by name: the project's own `pipelines/NAME.py` first, then a built-in.

Pipelines are the user's code. A project's file is loaded by its path (next to the config),
so it never clashes with the library's built-ins (`ci.pipelines.release`,
`ci.pipelines.image_only`) and the installed console script finds it from any directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, cast

from ci.core.errors import PipelineError

if TYPE_CHECKING:
    from ci.pipelines.handle import Release

PipelineFn = Callable[["Release"], "int | None"]
BUILTINS = {"release": "ci.pipelines.release", "image_only": "ci.pipelines.image_only"}
NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class LoadedPipeline:
    """A pipeline function and where it came from (shown in the verdict and `--json`)."""

    name: str
    fn: PipelineFn
    origin: str  # the file path, or the built-in module name


def project_file(root: Path, name: str) -> Path:
    """`<root>/pipelines/<name>.py`, refused if a link points it outside the project."""
    path = root / "pipelines" / f"{name}.py"
    resolved = path.resolve()
    if path.exists() and not resolved.is_relative_to(root.resolve()):
        raise PipelineError(f"pipeline {name!r}: {path} resolves outside the project "
                            f"({resolved})")
    return path


def load(name: str, root: Path) -> LoadedPipeline:
    """The pipeline `name` for the project at `root` (its own file wins over a built-in)."""
    if not NAME_RE.fullmatch(name):
        raise PipelineError(f"pipeline name {name!r}: use a module name like 'nightly' "
                            "(lowercase letters, digits, _)")
    path = project_file(root, name)
    if path.is_file():
        return LoadedPipeline(name, _function(_import_file(name, path, root), str(path)),
                              str(path))
    if name in BUILTINS:
        module = importlib.import_module(BUILTINS[name])
        return LoadedPipeline(name, _function(module, BUILTINS[name]), BUILTINS[name])
    raise PipelineError(f"no pipeline {name!r}: expected {path} or a built-in "
                        f"({', '.join(sorted(BUILTINS))})")


def _import_file(name: str, path: Path, root: Path) -> ModuleType:
    """Import a project's pipeline file as `pipelines.<name>` with the project importable
    (so it may import its own helpers, at import or at run time), translating its errors
    into one line. A previous project's `pipelines.*` modules are forgotten first."""
    _use_project(root)
    module_name = f"pipelines.{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineError(f"{path}: not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise PipelineError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # the user's module failed at import: say where, keep the type
        sys.modules.pop(module_name, None)
        raise PipelineError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
    return module


_project_root: list[str] = []  # the project root this process put on sys.path, if any


def _use_project(root: Path) -> None:
    """Make `root` the place `pipelines.*` imports resolve from (and only it)."""
    top = str(root.resolve())
    for old in _project_root:
        if old != top and old in sys.path:
            sys.path.remove(old)
    _project_root[:] = [top]
    if top not in sys.path:
        sys.path.insert(0, top)
    for mod_name in [m for m in sys.modules if m == "pipelines" or m.startswith("pipelines.")]:
        origin = getattr(sys.modules[mod_name], "__file__", None) or ""
        paths = list(getattr(sys.modules[mod_name], "__path__", []) or [])
        inside = [q for q in [origin, *paths] if q and Path(q).resolve().is_relative_to(top)]
        if not inside:
            del sys.modules[mod_name]


def _function(module: ModuleType, origin: str) -> PipelineFn:
    fn = getattr(module, "pipeline", None)
    if not callable(fn):
        raise PipelineError(f"{origin} has no pipeline(run) function")
    return cast(PipelineFn, fn)
