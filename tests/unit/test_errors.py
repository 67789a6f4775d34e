"""The one error tree: every public error is in ci.core.errors, exits as its docstring says,
and crosses the Dagger child's process boundary with its class and fields intact."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from ci.adapters.engines.dagger_child import OUTPUT_TAIL, ChildError, ChildResponse, error_from
from ci.core import errors
from ci.core.errors import (
    MISSING,
    CIError,
    ConfigError,
    ConfigProblem,
    EngineError,
    StepFailed,
    TagMoveError,
    TestsFailed,
)
from ci.core.redact import MASK, register

ROOT = Path(__file__).resolve().parents[2] / "ci"
TREE_LINE = re.compile(r"^    (?P<indent>[│├└─ ]*)(?P<name>[A-Z]\w+)\s+(?:base; )?exit (?P<code>\d+)")


def _modules() -> list[str]:
    """Every ci module that defines a class (ci.__main__ runs the CLI on import: skipped)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        if any(isinstance(n, ast.ClassDef) for n in ast.walk(ast.parse(path.read_text()))):
            parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _defined_exceptions(module: str) -> list[type[BaseException]]:
    """The exception classes whose `class` statement is in `module` (top level or nested)."""
    mod = importlib.import_module(module)
    tree = ast.parse(Path(mod.__file__ or "").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            obj = getattr(mod, node.name, None)
            if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == module:
                out.append(obj)
    return out


def _tree() -> list[tuple[str, int, str | None]]:
    """(name, exit code, parent name) for each line of the tree in the errors docstring."""
    rows: list[tuple[str, int, str | None]] = []
    stack: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        m = TREE_LINE.match(line)
        if not m:
            continue
        depth = len(m["indent"]) // 4
        del stack[depth:]
        rows.append((m["name"], int(m["code"]), stack[-1] if stack else None))
        stack.append(m["name"])
    return rows


def _public_errors() -> dict[str, type[CIError]]:
    return {name: obj for name, obj in vars(errors).items()
            if isinstance(obj, type) and issubclass(obj, CIError) and not name.startswith("_")}


def test_every_public_exception_under_ci_is_in_the_error_tree() -> None:
    strays = [f"{cls.__module__}.{cls.__name__}"
              for module in _modules() for cls in _defined_exceptions(module)
              if not cls.__name__.startswith("_")
              and not (issubclass(cls, CIError) and cls.__module__ == errors.__name__)]
    assert strays == [], "define public errors in ci/core/errors.py, under CIError"


def test_moved_errors_keep_their_old_import_paths() -> None:
    from ci.core.junit import JUnitError
    from ci.core.manifests import ManifestError
    from ci.stages.publish import TagMoveError as Moved

    assert (JUnitError, ManifestError, Moved) == (errors.JUnitError, errors.ManifestError, TagMoveError)
    assert not issubclass(errors.ManifestError, ValueError) and issubclass(errors.ManifestError,
                                                                           errors.GitOpsError)


def test_the_docstring_tree_is_the_class_tree_with_its_exit_codes() -> None:
    rows = _tree()
    public = _public_errors()
    assert sorted(name for name, _, _ in rows) == sorted(public)
    for name, code, parent in rows:
        cls = public[name]
        assert cls.exit_code == code, name
        assert cls.__bases__ == ((public[parent],) if parent else (Exception,)), name
    codes = {name: code for name, code, _ in rows}
    assert (codes["CIError"], codes["UsageError"], codes["StepFailed"], codes["Interrupted"]) == (
        errors.EXIT_INTERNAL, errors.EXIT_USAGE, errors.EXIT_FAILED, errors.EXIT_INTERRUPTED)
    assert {errors.EXIT_OK, *codes.values()} == {0, 1, 2, 3, 130}


def _wire(exc: CIError) -> CIError:
    """Through the child's JSON file and back, as dagger_child and dagger_routing do it."""
    text = ChildResponse(error=ChildError.of(exc)).model_dump_json()
    back = ChildResponse.model_validate_json(text).error
    assert back is not None
    return error_from(back)


def _sample(cls: type[CIError]) -> CIError:
    if issubclass(cls, StepFailed):
        return cls("tests failed on linux/arm64 (exit 3)", step="test", cmd=["pytest", "-q"],
                   returncode=3, stdout="collected 2 items\n", stderr="E assert 1 == 2\n")
    if issubclass(cls, ConfigError):
        return cls([ConfigProblem("project.image", "Bad/Name", "not an image repository", "ci.toml"),
                    ConfigProblem("build.platforms", MISSING, "field required")])
    if issubclass(cls, TagMoveError):
        return cls("failed at tag 'latest'", moved=["v1"], rolled_back=["v1.0"], not_moved=["latest"])
    return cls(f"{cls.__name__} happened")


@pytest.mark.parametrize("cls", sorted(_public_errors().values(), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_error_class_survives_the_child_boundary(cls: type[CIError]) -> None:
    exc = _sample(cls)
    back = _wire(exc)
    assert type(back) is cls
    assert (back.message, back.lines(), back.exit_code) == (exc.message, exc.lines(), exc.exit_code)
    if not isinstance(exc, ConfigError):  # problems carry their value as its repr: compared by lines
        assert vars(back) == vars(exc)


@pytest.mark.parametrize("cls", [StepFailed, TestsFailed])
def test_step_failed_keeps_step_cmd_exit_code_and_output(cls: type[StepFailed]) -> None:
    back = _wire(cls("boom", step="test", cmd=["pytest", "-q"], returncode=3, stdout="out\n",
                     stderr="err\n"))
    assert isinstance(back, cls) and type(back) is cls
    assert (back.step, back.cmd, back.returncode, back.stdout, back.stderr) == (
        "test", ["pytest", "-q"], 3, "out\n", "err\n")
    assert back.tail() == "err"


def test_config_error_keeps_every_problem_line() -> None:
    exc = ConfigError([ConfigProblem("runners.0.host", "ftp://x", "host must be a URL", "ci.toml"),
                       ConfigProblem("project.name", MISSING, "field required")])
    back = _wire(exc)
    assert isinstance(back, ConfigError) and len(back.problems) == 2
    assert back.lines() == exc.lines() == [
        "config error: ci.toml: runners.0.host = 'ftp://x': host must be a URL",
        "config error: project.name: field required",
    ]


def test_unknown_or_foreign_kind_is_an_engine_error_with_the_message() -> None:
    for kind in ("NoSuchError", "os.system", "MISSING", "ConfigProblem", "ValueError"):
        err = error_from({"kind": kind, "message": "went wrong"})
        assert type(err) is EngineError and err.message == "went wrong", kind


def test_a_private_subclass_travels_as_its_nearest_public_class() -> None:
    class _Local(TestsFailed):
        pass

    back = _wire(_Local("x", step="test", returncode=1))
    assert type(back) is TestsFailed and back.step == "test"


def test_output_is_tail_limited() -> None:
    out = "a" * OUTPUT_TAIL + "THE END"
    err = ChildError.of(StepFailed("x", stdout=out, stderr=out))
    assert len(err.stdout) == len(err.stderr) == OUTPUT_TAIL and err.stdout.endswith("THE END")


def test_registered_secrets_never_reach_the_json() -> None:
    secret = 'hunter2-"quoted\\slash'  # JSON escapes it: masking the dumped text would miss it
    register(secret)
    exc = TestsFailed(f"login as {secret} failed", step="push", cmd=["login", f"--password={secret}"],
                      returncode=3, stdout=f"out {secret}", stderr=f"denied for {secret}\n")
    text = ChildResponse(error=ChildError.of(exc)).model_dump_json()
    assert "hunter2" not in text and text.count(MASK) == 4  # message, cmd, stdout, stderr
    back = _wire(exc)
    assert isinstance(back, TestsFailed)
    assert secret not in f"{back.message}{back.cmd}{back.stdout}{back.stderr}"
    assert back.stderr == f"denied for {MASK}\n" and back.returncode == 3
    config = ConfigError([ConfigProblem("publish.auth.password", secret, "too short")])
    assert "hunter2" not in ChildResponse(error=ChildError.of(config)).model_dump_json()
