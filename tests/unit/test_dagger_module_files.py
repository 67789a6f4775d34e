"""The Dagger module's files and registry, without any engine (see
tests/integration/test_dagger_module.py for its functions through the fake engine).

What `dagger call` needs before any function runs: dagger.json naming the Python SDK, the
engine version the library is built for and the module source; a module pyproject that
installs THIS library (a path source inside dagger.json's "include") and the PyPI SDK the
library pins; the entry point the runtime loads; and the object type the decorators fill,
with the functions and arguments the README documents. A renamed function or argument, a
dropped default or a broken pointer fails here.
"""

from __future__ import annotations

import importlib
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.dagger_fake.engine import ENGINE_VERSION

REPO = Path(__file__).resolve().parents[2]
MODULE_SRC = REPO / ".dagger" / "src"


def load_module() -> Any:
    """The module package as the runtime imports it (its src/ on the path)."""
    if str(MODULE_SRC) not in sys.path:
        sys.path.insert(0, str(MODULE_SRC))
    return importlib.import_module("multiarch_ci_dagger")


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _requirements(project: dict[str, Any]) -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {r.name: r for r in reqs}


def test_dagger_json_names_the_python_sdk_the_engine_and_the_module_source() -> None:
    conf = json.loads((REPO / "dagger.json").read_text())
    assert conf["name"] == "multiarch-ci"
    assert conf["sdk"] == {"source": "python"}
    assert conf["engineVersion"] == ENGINE_VERSION == "v0.21.8"  # the schema the tests validate
    source = REPO / conf["source"]
    assert (source / "pyproject.toml").is_file()
    assert (source / "src" / "multiarch_ci_dagger" / "__init__.py").is_file()
    # the library the module installs from `..` must be in the module's context
    assert {"ci/**", "pyproject.toml", "README.md"} <= set(conf["include"])


def test_module_pyproject_installs_this_library_and_the_sdk_it_pins() -> None:
    root = _toml(REPO / "pyproject.toml")["project"]
    mod = _toml(REPO / ".dagger" / "pyproject.toml")
    project = mod["project"]
    reqs = _requirements(project)
    assert project["name"] == "multiarch-ci-dagger"  # not the library's own name
    assert project["requires-python"] == root["requires-python"]
    assert str(reqs["dagger-io"].specifier) == str(_requirements(root)["dagger-io"].specifier)
    assert "multiarch-ci" in reqs
    sources = mod["tool"]["uv"]["sources"]
    assert "dagger-io" not in sources  # the PyPI SDK, not the engine's vendored copy
    lib = (REPO / ".dagger" / sources["multiarch-ci"]["path"]).resolve()
    assert lib == REPO and _toml(lib / "pyproject.toml")["project"]["name"] == "multiarch-ci"
    # the runtime's image must have git: the source's sha/branch and the deploy push use it
    assert not mod["tool"]["dagger"]["base-image"].endswith("-slim")


def test_the_lock_pins_this_library_and_an_sdk_in_its_range() -> None:
    """With a uv.lock the runtime installs with `uv sync` (no vendored SDK); its pins must
    agree with the pyproject."""
    lock = _toml(REPO / ".dagger" / "uv.lock")
    packages = {p["name"]: p for p in lock["package"]}
    assert packages["multiarch-ci"]["source"] == {"directory": "../"}
    assert packages["multiarch-ci-dagger"]["source"] == {"editable": "."}
    sdk = _requirements(_toml(REPO / "pyproject.toml")["project"])["dagger-io"]
    assert Version(packages["dagger-io"]["version"]) in sdk.specifier


def test_the_entry_point_is_the_main_object() -> None:
    entry = _toml(REPO / ".dagger" / "pyproject.toml")["project"]["entry-points"]["dagger.mod"]
    package, _, name = entry["main_object"].partition(":")
    pkg = load_module()
    assert package == pkg.__name__
    cls = getattr(pkg, name)
    # the engine names the main object after the module: multiarch-ci → MultiarchCi
    assert cls.__name__ == "MultiarchCi"
    assert cls.__dagger_object_type__ is cls.__dagger_module__.get_object("MultiarchCi")


EXPECTED = {
    "plan": ["source", "config", "platform", "matrix", "env"],
    "build": ["source", "platform", "config", "model_version", "run_id", "env",
              "registry_password"],
    "release": ["source", "pipeline", "config", "platform", "dry_run", "force", "env",
                "registry_password"],
}


def _function(name: str) -> Any:
    return load_module().MultiarchCi.__dagger_object_type__.functions[name]


def test_the_object_type_registers_plan_build_and_release() -> None:
    functions = load_module().MultiarchCi.__dagger_object_type__.functions
    assert sorted(functions) == sorted(EXPECTED)
    for name, args in EXPECTED.items():
        fn = functions[name]
        assert [p.name for p in fn.parameters.values()] == args, name
        assert fn.return_type is str
        assert fn.doc, f"{name} has no description for `dagger functions`"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_source_defaults_to_the_module_directory(name: str) -> None:
    source = _function(name).parameters["source"]
    assert source.default_path == "."  # so `--source=.` may be left out
    assert source.is_optional
    assert ".venv" in (source.ignore or [])


def test_only_builds_platform_is_required() -> None:
    required = {(n, p.name) for n in EXPECTED
                for p in _function(n).parameters.values() if not p.is_optional}
    assert required == {("build", "platform")}


def test_defaults_match_the_cli() -> None:
    """The same defaults as `ci run` / `ci job`: the built-in release, no dry run, no force,
    the config found like the CLI finds it."""
    release = _function("release").parameters
    assert json.loads(release["pipeline"].default_value) == "release"
    assert json.loads(release["dry_run"].default_value) is False
    assert json.loads(release["force"].default_value) is False
    for name in EXPECTED:
        assert json.loads(_function(name).parameters["config"].default_value) == ""


def test_env_entries_are_name_value_pairs() -> None:
    from ci.core.errors import UsageError

    library = importlib.import_module("multiarch_ci_dagger.library")
    env = library.environ(["A=1", "B=x=y", "C="], base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "A": "1", "B": "x=y", "C": ""}
    for bad in ("NOEQUALS", "=v", " A=1"):
        with pytest.raises(UsageError, match="expected NAME=VALUE"):
            library.environ([bad], base={})


def test_a_registry_password_goes_where_the_config_reads_it(tmp_path: Path) -> None:
    """`--registry-password` lands in the variable publish.auth.password_env names, so the
    library reads it as it reads it in a CI job (the fake engine never hands a secret's
    plaintext back, so the Secret itself is only read by a real engine)."""
    from ci.core.errors import UsageError

    library = importlib.import_module("multiarch_ci_dagger.library")
    base = '[project]\nname = "svc"\nimage = "127.0.0.1:5000/svc"\nplatforms = ["linux/amd64"]\n'
    (tmp_path / "ci.toml").write_text(
        base + '[publish]\nauth = { username = "ci", password_env = "REG_PW" }\n')
    assert library.password_variable(tmp_path, "", {}) == "REG_PW"
    (tmp_path / "other.toml").write_text(base)
    with pytest.raises(UsageError, match=r"no publish\.auth\.password_env"):
        library.password_variable(tmp_path, "other.toml", {})
