"""The input hash (code files + package-shipped data + params + command) and the run's
environment: what decides whether an unchanged rerun reuses the last run."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest

from ci.core.errors import ConfigError
from ci.core.results import SourceInfo
from ci.stages.training import (
    INPUT_HASH_TAG,
    input_hash,
    input_identity,
    lineage_tags,
    param_env,
    resolve_command,
)

CMD = ["python", "train.py"]
PARAMS = {"C": 1.0, "seed": 7}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("print('train')\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "features.py").write_text("X = 1\n")
    return tmp_path


def h(work: Path, inputs: list[str] | None = None, params: dict | None = None,
      cmd: list[str] | None = None) -> str:
    return input_hash(work, inputs or ["train.py", "lib"], params or PARAMS, cmd or CMD)


def test_same_inputs_same_hash(work: Path) -> None:
    first = h(work)
    assert len(first) == 64
    assert h(work) == first


def test_param_order_does_not_matter(work: Path) -> None:
    assert h(work, params={"seed": 7, "C": 1.0}) == h(work, params={"C": 1.0, "seed": 7})


@pytest.mark.parametrize("params", [{"C": 0.5, "seed": 7}, {"C": 1.0}, {**PARAMS, "features": 2}])
def test_param_changes_change_the_hash(work: Path, params: dict) -> None:
    assert h(work, params=params) != h(work)


def test_one_byte_in_a_file_changes_the_hash(work: Path) -> None:
    before = h(work)
    (work / "train.py").write_text("print('train!')\n")
    assert h(work) != before


def test_a_new_file_in_an_input_folder_changes_the_hash(work: Path) -> None:
    before = h(work)
    (work / "lib" / "more.py").write_text("")
    assert h(work) != before


def test_renaming_a_file_changes_the_hash(work: Path) -> None:
    before = h(work)
    (work / "lib" / "features.py").rename(work / "lib" / "other.py")
    assert h(work) != before


def test_caches_in_input_folders_are_ignored(work: Path) -> None:
    before = h(work)
    (work / "lib" / "__pycache__").mkdir()
    (work / "lib" / "__pycache__" / "features.cpython-311.pyc").write_bytes(b"\0\1")
    (work / "lib" / "stale.pyc").write_bytes(b"\0")
    assert h(work) == before


def test_files_outside_inputs_do_not_matter(work: Path) -> None:
    before = h(work)
    (work / "README.md").write_text("docs")
    assert h(work) == before


def test_the_command_is_part_of_the_hash(work: Path) -> None:
    assert h(work, cmd=["python", "train.py", "--fast"]) != h(work)


def test_package_shipped_data_is_identified_by_version(work: Path) -> None:
    identity = input_identity(work, ["train.py", "pkg:pydantic"], PARAMS, CMD)
    assert identity["packages"] == {"pydantic": metadata.version("pydantic")}
    assert list(identity["files"]) == ["train.py"]  # type: ignore[call-overload]
    assert h(work, inputs=["train.py", "pkg:pydantic"]) != h(work, inputs=["train.py"])


def test_missing_input_is_a_config_error_naming_the_key(work: Path) -> None:
    with pytest.raises(ConfigError) as err:
        h(work, inputs=["train.py", "data/wine.csv"])
    problem = err.value.problems[0]
    assert problem.path == "model.inputs"
    assert problem.value == "data/wine.csv"


def test_unknown_package_is_a_config_error(work: Path) -> None:
    with pytest.raises(ConfigError, match="no such installed distribution"):
        h(work, inputs=["pkg:surely-not-installed-xyz"])


def test_params_reach_the_script_as_json_and_per_name() -> None:
    env = param_env({"C": 0.5, "max_iter": 10, "use-bias": True, "name": "x"})
    assert json.loads(env["MACI_PARAMS"]) == {"C": 0.5, "max_iter": 10, "use-bias": True, "name": "x"}
    assert env["MACI_PARAM_C"] == "0.5"
    assert env["MACI_PARAM_MAX_ITER"] == "10"
    assert env["MACI_PARAM_USE_BIAS"] == "true"
    assert env["MACI_PARAM_NAME"] == "x"


def test_python_means_the_interpreter_running_ci() -> None:
    assert resolve_command(["python", "train.py"]) == [sys.executable, "train.py"]
    assert resolve_command(["python3", "-m", "x"]) == [sys.executable, "-m", "x"]
    assert resolve_command(["/opt/py/bin/python", "t.py"]) == ["/opt/py/bin/python", "t.py"]


def test_lineage_tags_carry_source_and_hash_and_drop_empties() -> None:
    src = SourceInfo(sha="a" * 40, branch="main", run_id="42", run_url="https://ci/42",
                     provider="github")
    tags = lineage_tags(src, "20260101T000000Z-abc", "f" * 64)
    assert tags[INPUT_HASH_TAG] == "f" * 64
    assert tags["maci.git.sha"] == tags["mlflow.source.git.commit"] == "a" * 40
    assert tags["maci.git.branch"] == "main"
    assert tags["maci.pipeline.run_id"] == "20260101T000000Z-abc"
    assert tags["maci.ci.run_url"] == "https://ci/42"
    assert "maci.git.tag" not in tags
    assert all(v for v in tags.values())
