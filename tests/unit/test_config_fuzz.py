"""Fuzzing the two readers of user files (issue #14, item 5): the config loader and the result
files `ci merge` reads. Whatever the bytes, the answer is data or a UsageError/ConfigError that
renders as one line per problem — never a traceback, never another exception type; through
the CLI a bad result file is exit 2 and one line on stderr."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ci.cli import main
from ci.commands.merge import load_result
from ci.core import config as cfg
from ci.core.errors import ConfigError, UsageError
from ci.core.results import PlatformResult

BASE = '[project]\nname = "svc"\nimage = "127.0.0.1:5000/team/svc"\n'
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# (table, key, is a list) of every path-like field the loader checks
PATH_FIELDS = [
    ("project", "state_dir", False), ("build", "context", False), ("build", "dockerfile", False),
    ("build", "ca_bundle", False), ("test", "junit_path", False), ("model", "workdir", False),
    ("model", "inputs", True), ("model", "python", False), ("model.artifact", "path", False),
    ("model.artifact", "dest", False), ("model.container", "context", False),
    ("model.container", "dockerfile", False), ("deploy", "manifests", True),
    ("deploy", "remote", False), ("deploy", "branch", False), ("publish", "latest_on", False),
    ("smoke", "health_path", False),
]
HOSTILE = st.lists(st.sampled_from(
    ["a", "b", "/", ".", "..", "\\", "-", "--upload-pack=", ":", "*", "~", "@{", " ", "\x00",
     "\n", "\t", "\x7f", "\u2028", "é", "C:", ",", "env:", "link", "inner", "ext::"]),
    max_size=8).map("".join)
PATH_VALUES = st.one_of(HOSTILE, st.text(max_size=20))
REQUIRED = {"model": 'train_command = "t"\nregistered_model = "m"\n',
            "deploy": 'remote = "deploy.git"\nmanifests = ["k8s/a.yaml"]\n'}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real project: a folder, a file, a link out of it and one that stays inside."""
    base = tmp_path_factory.mktemp("fuzz")
    project = base / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "Dockerfile").write_text("FROM scratch\n")
    (base / "outside").mkdir()
    (project / "link").symlink_to(base / "outside")
    (project / "inner").symlink_to(project / "app")
    return project


def document(table: str, key: str, value: object) -> str:
    """BASE plus the table holding the fuzzed field (and the keys its section requires)."""
    line = f"{key} = {json.dumps(value, ensure_ascii=False)}\n"
    if table == "project":
        return BASE + line
    head = table.split(".")[0]
    required = "".join(f"{r}\n" for r in REQUIRED.get(head, "").splitlines()
                       if not (table == head and r.startswith(f"{key} ")))
    if table == head:
        return BASE + f"[{head}]\n{required}{line}"
    return BASE + f"[{head}]\n{required}[{table}]\n{line}"


def load_or_problems(path: Path, environ: dict[str, str] | None = None) -> list[str] | None:
    """None when a Config loaded, else the rendered lines, each checked to be one line."""
    try:
        cfg.load(path, environ or {}, path.parent)
    except ConfigError as exc:
        lines = exc.lines()
        assert lines and all(len(line.splitlines()) == 1 for line in lines), lines
        assert exc.exit_code == 2
        return lines
    return None


@FUZZ
@given(st.sampled_from(PATH_FIELDS), PATH_VALUES, st.booleans())
def test_any_value_of_a_path_field_loads_or_is_one_line(
    root: Path, field: tuple[str, str, bool], value: str, wrap: bool
) -> None:
    table, key, is_list = field
    file = root / "ci.toml"
    file.write_text(document(table, key, [value] if is_list and wrap else value))
    lines = load_or_problems(file)
    if lines is not None:
        # one bad field: one problem, one line (a list given as "a,b" is one entry each)
        assert len(lines) == 1 or (is_list and not wrap and "," in value), lines
        assert all(f": {table}" in line or "invalid TOML" in line for line in lines), lines


@FUZZ
@given(st.sampled_from([f for f in PATH_FIELDS if f[0] in ("project", "build", "deploy")]),
       PATH_VALUES)
def test_any_path_override_from_the_environment_is_one_line(
    root: Path, field: tuple[str, str, bool], value: str
) -> None:
    table, key, _ = field
    file = root / "ci.toml"
    file.write_text(BASE + (f"[deploy]\n{REQUIRED['deploy']}" if table == "deploy" else ""))
    name = f"MACI_{table.upper()}__{key.upper()}"
    load_or_problems(file, {name: value.replace("\x00", "")})  # no NUL in an environment


FRAGMENTS = st.sampled_from([
    "[project]\n", "[build]\n", "[deploy]\n", "[model]\n", "[model.container]\n", "[[runners]]\n",
    'name = "svc"\n', 'image = "r/x"\n', "manifests = ", "remote = ", "branch = ", "context = ",
    "state_dir = ", "dockerfile = ", "inputs = ", '"../../etc/passwd"', '"/abs"', '"-x"',
    '"link/x"', '"inner"', '"\\u0000"', '"a\\nb"', "[", "]", ", ", "\n", "=", '"', "1", "true",
    "{ a = 1 }", "'lit'", '"""', "#", "\\",
])


@FUZZ
@given(st.lists(FRAGMENTS, max_size=25).map("".join))
def test_toml_ish_documents_load_or_are_one_line_per_problem(root: Path, text: str) -> None:
    file = root / "ci.toml"
    file.write_text(text)
    load_or_problems(file)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_as_a_config_file_are_one_line(root: Path, blob: bytes) -> None:
    file = root / "ci.toml"
    file.write_bytes(blob)
    load_or_problems(file)


# ---------------------------------------------------------------- result files of `ci merge`

VALID: dict[str, Any] = json.loads(PlatformResult(
    project="svc", image="127.0.0.1:5000/team/svc", platform="linux/amd64", runner="local",
    engine="docker", placement="native", status="passed", digest="sha256:" + "1" * 64,
).model_dump_json())
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=3)
    | st.dictionaries(st.sampled_from([*VALID, "tests", "smoke", "\n", "é", "a.b"]) | st.text(max_size=5),
                      kids, max_size=4),
    max_leaves=10,
)
NEAR_VALID = st.builds(lambda key, value: {**VALID, key: value},
                       st.sampled_from([*VALID, "tests", "failure", "smoke", "x\ny"]), JSON)


def result_line(path: Path) -> str | None:
    """None when the file parsed, else the one-line UsageError message."""
    try:
        load_result(path)
    except UsageError as exc:
        assert exc.exit_code == 2 and len(exc.lines()) == 1
        assert len(exc.lines()[0].splitlines()) == 1, exc.lines()
        return exc.lines()[0]
    return None


@FUZZ
@given(st.one_of(st.binary(max_size=200), JSON.map(lambda v: json.dumps(v).encode()),
                 NEAR_VALID.map(lambda v: json.dumps(v, ensure_ascii=False).encode())))
def test_any_result_file_parses_or_is_one_line(root: Path, blob: bytes) -> None:
    file = root / "result.json"
    file.write_bytes(blob)
    result_line(file)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.one_of(st.binary(max_size=100), JSON.map(lambda v: json.dumps(v).encode()),
                 NEAR_VALID.map(lambda v: json.dumps(v).encode())))
def test_ci_merge_of_a_bad_result_file_is_exit_2_and_one_line(root: Path, blob: bytes) -> None:
    file = root / "leg.json"
    file.write_bytes(blob)
    assume(result_line(file) is not None)  # a file that parses goes on to the verdict
    config = root / "merge.toml"
    config.write_text(BASE)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["merge", str(file), "--config", str(config)])
    assert code == 2
    assert len(err.getvalue().splitlines()) == 1 and "not a platform result" in err.getvalue()
    assert out.getvalue() == ""
