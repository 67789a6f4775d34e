"""The pipeline loader (ci/pipelines/loader.py) on temporary project folders, no docker.

A project's `pipelines/NAME.py` is loaded by its path next to the config and wins over a
built-in of the same name; every way a pipeline file can be wrong is one PipelineError
(exit 2) that names the file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import ci.pipelines.image_only
import ci.pipelines.release
from ci.core.errors import EXIT_USAGE, PipelineError
from ci.pipelines import loader


@pytest.fixture(autouse=True)
def clean_imports() -> Iterator[None]:
    """The loader makes the project importable for the rest of the process (a helper may be
    imported when the pipeline runs): give the next test this process's sys.path and
    modules back, so no test leans on another's project."""
    path_before = list(sys.path)

    def forget() -> None:
        for name in [m for m in sys.modules if m == "pipelines" or m.startswith("pipelines.")]:
            del sys.modules[name]

    forget()
    yield
    forget()
    sys.path[:] = path_before


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


RETURNS_7 = "def pipeline(run):\n    return 7\n"


def test_a_projects_file_wins_over_the_builtin_of_the_same_name(tmp_path: Path) -> None:
    path = write(tmp_path, "pipelines/release.py", RETURNS_7)
    found = loader.load("release", tmp_path)
    assert found.name == "release"
    assert found.origin == str(path)
    assert found.fn(None) == 7  # type: ignore[arg-type]
    # loaded by path: the library's own module of that name is untouched
    assert ci.pipelines.release.pipeline is not found.fn


@pytest.mark.parametrize("name, module", [("release", ci.pipelines.release),
                                          ("image_only", ci.pipelines.image_only)])
def test_builtins_are_found_when_the_project_has_no_file(tmp_path: Path, name: str,
                                                         module: object) -> None:
    write(tmp_path, "pipelines/nightly.py", RETURNS_7)  # other pipelines do not matter
    found = loader.load(name, tmp_path)
    assert found.origin == f"ci.pipelines.{name}"
    assert found.fn is module.pipeline  # type: ignore[attr-defined]


def test_a_missing_pipeline_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(PipelineError) as err:
        loader.load("nosuch", tmp_path)
    message = err.value.message
    assert str(tmp_path / "pipelines" / "nosuch.py") in message
    assert "image_only, release" in message  # and the built-ins it looked for
    assert err.value.exit_code == EXIT_USAGE
    assert "\n" not in message


def test_a_syntax_error_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "pipelines/broken.py",
                 "from ci import Release\n\ndef pipeline(run: Release) -> int\n    return 0\n")
    with pytest.raises(PipelineError) as err:
        loader.load("broken", tmp_path)
    assert err.value.message.startswith(f"{path}:3: syntax error")
    assert "\n" not in err.value.message
    assert "pipelines.broken" not in sys.modules


def test_an_error_at_import_names_the_file_and_the_exception(tmp_path: Path) -> None:
    path = write(tmp_path, "pipelines/fails.py", "1 / 0\n" + RETURNS_7)
    with pytest.raises(PipelineError) as err:
        loader.load("fails", tmp_path)
    assert err.value.message == f"{path}: import failed: ZeroDivisionError: division by zero"
    assert "pipelines.fails" not in sys.modules


@pytest.mark.parametrize("linked", ["file", "folder"])
def test_a_link_pointing_outside_the_project_is_refused(tmp_path: Path, linked: str) -> None:
    root, outside = tmp_path / "project", tmp_path / "elsewhere"
    write(outside, "nightly.py", RETURNS_7)
    if linked == "file":
        (root / "pipelines").mkdir(parents=True)
        (root / "pipelines" / "nightly.py").symlink_to(outside / "nightly.py")
    else:
        root.mkdir()
        (root / "pipelines").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PipelineError) as err:
        loader.load("nightly", root)
    assert "resolves outside the project" in err.value.message
    assert str(outside / "nightly.py") in err.value.message
    assert "pipelines.nightly" not in sys.modules


def test_a_link_inside_the_project_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "ci/shared.py", RETURNS_7)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "nightly.py").symlink_to(tmp_path / "ci" / "shared.py")
    assert loader.load("nightly", tmp_path).fn(None) == 7  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["def release(run):\n    return 0\n", "pipeline = 42\n"])
def test_a_file_without_a_pipeline_function_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "pipelines/nightly.py", text)
    with pytest.raises(PipelineError) as err:
        loader.load("nightly", tmp_path)
    assert err.value.message == f"{path} has no pipeline(run) function"


@pytest.mark.parametrize("name", ["../x", "x/y", "Nightly", "night-ly", "", "1st", "x.py"])
def test_names_that_are_not_module_names_are_refused(tmp_path: Path, name: str) -> None:
    write(tmp_path, "x.py", RETURNS_7)  # ../x would be this file
    write(tmp_path, "pipelines/x.py", RETURNS_7)
    with pytest.raises(PipelineError) as err:
        loader.load(name, tmp_path / "pipelines")
    assert f"pipeline name {name!r}" in err.value.message


@pytest.mark.parametrize("package", [True, False], ids=["package", "namespace"])
def test_a_pipeline_imports_the_projects_own_helper_module(tmp_path: Path,
                                                           package: bool) -> None:
    if package:
        write(tmp_path, "pipelines/__init__.py", "")
    write(tmp_path, "pipelines/common.py", "x = 41\n")
    write(tmp_path, "pipelines/nightly.py",
          "from pipelines.common import x\n\n\ndef pipeline(run):\n    return x + 1\n")
    found = loader.load("nightly", tmp_path)
    assert found.fn(None) == 42  # type: ignore[arg-type]
    assert sys.modules["pipelines.common"].__file__ == str(tmp_path / "pipelines" / "common.py")


def test_two_projects_in_one_process_each_get_their_own_helpers(tmp_path: Path) -> None:
    """One process (a test session, a tool driving several projects) loading `nightly` of two
    projects: each must see its OWN `pipelines.common`, not the first project's."""
    for n, root in enumerate([tmp_path / "a", tmp_path / "b"]):
        write(root, "pipelines/common.py", f"x = {n}\n")
        write(root, "pipelines/nightly.py",
              "from pipelines.common import x\n\n\ndef pipeline(run):\n    return x\n")
    first = loader.load("nightly", tmp_path / "a")
    second = loader.load("nightly", tmp_path / "b")
    assert (first.fn(None), second.fn(None)) == (0, 1)  # type: ignore[arg-type]


def test_a_helper_imported_when_the_pipeline_runs_is_found(tmp_path: Path) -> None:
    """An import inside `pipeline()` (to keep loading cheap) runs after the loader returned:
    it must find the project's helper too, whatever directory `ci` was started from."""
    write(tmp_path, "pipelines/common.py", "x = 5\n")
    write(tmp_path, "pipelines/late.py",
          "def pipeline(run):\n    from pipelines.common import x\n\n    return x\n")
    found = loader.load("late", tmp_path)
    assert found.fn(None) == 5  # type: ignore[arg-type]
