"""The training environment without MLflow or Docker: which interpreter `python` means,
what the probe reports, how MACI_OUTPUT_DIR files are read, and the config it comes from."""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from ci.core import config as cfg
from ci.core.errors import ConfigError, StepFailed
from ci.core.jobs import spec_for
from ci.core.plan import Placement, PlatformJob
from ci.core.results import SourceInfo
from ci.stages import train_env, train_outputs
from ci.stages.inputs import collect
from ci.stages.training import model_inputs, resolve_command


def conf(root: Path, **model: Any) -> cfg.Config:
    data = {"project": {"name": "tiny", "image": "registry.local/tiny"},
            "model": {"train_command": ["python", "train.py"], "registered_model": "m", **model}}
    return cfg.validate(data, str(root / "ci.toml"), str(root))


def venv_python(folder: Path) -> Path:
    """A `.venv/bin/python` that is a symlink, as `python -m venv` makes it."""
    bin_dir = folder / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    return bin_dir / "python"


def resolved(config: cfg.Config) -> tuple[str, str]:
    model = config.model
    assert model is not None
    return train_env.interpreter(config, model, config.root_path.resolve())


# ---------------------------------------------------------------- interpreter


def test_without_a_venv_python_is_cis_interpreter_and_says_why(tmp_path: Path) -> None:
    path, why = resolved(conf(tmp_path))
    assert path == sys.executable
    assert why.startswith("ci's interpreter: no model.python and no .venv")


def test_a_project_venv_is_the_default_and_its_symlink_is_kept(tmp_path: Path) -> None:
    venv = venv_python(tmp_path)
    path, why = resolved(conf(tmp_path))
    assert (path, why) == (str(venv), "project .venv")
    assert Path(path).is_symlink(), "resolving the link would leave the venv"


def test_the_workdirs_venv_wins_over_the_roots(tmp_path: Path) -> None:
    venv_python(tmp_path)
    inner = venv_python(tmp_path / "training")
    config = conf(tmp_path, workdir="training")
    model = config.model
    assert model is not None
    path, _ = train_env.interpreter(config, model, (tmp_path / "training").resolve())
    assert path == str(inner)


def test_model_python_path_is_relative_to_the_project_root(tmp_path: Path) -> None:
    venv_python(tmp_path / "envs" / "py")
    path, why = resolved(conf(tmp_path, python="envs/py/.venv/bin/python"))
    assert path == str(tmp_path.resolve() / "envs/py/.venv/bin/python")
    assert why == "model.python"


def test_model_python_by_name_is_looked_up_on_path(tmp_path: Path) -> None:
    name = Path(sys.executable).name
    path, why = resolved(conf(tmp_path, python=name))
    assert path == shutil.which(name) and why == f"model.python {name!r} on PATH"


@pytest.mark.parametrize(("value", "match"), [
    ("missing/bin/python", r"model.python.*no such file \(a relative path is under"),
    ("no-such-python-3.99", r"model.python.*not found on PATH"),
])
def test_a_missing_model_python_is_a_config_error(tmp_path: Path, value: str,
                                                  match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolved(conf(tmp_path, python=value))


def test_a_declared_but_broken_venv_never_falls_back_silently(tmp_path: Path) -> None:
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError, match=r"\.venv has no working bin/python"):
        resolved(conf(tmp_path))


def test_model_python_takes_one_word() -> None:
    with pytest.raises(ConfigError, match=r"model\.python"):
        conf(Path("/tmp"), python="python -X dev")


# ---------------------------------------------------------------- the command


def test_python_in_the_command_becomes_the_interpreter(tmp_path: Path) -> None:
    venv = venv_python(tmp_path)
    config = conf(tmp_path, train_command=["python3", "train.py", "--fast"])
    setup = train_env.local_setup(config, config.model, tmp_path.resolve())  # type: ignore[arg-type]
    assert setup.argv == [str(venv), "train.py", "--fast"]
    assert setup.description == f"interpreter {venv} (project .venv)"
    assert setup.probe == [str(venv)]


@pytest.mark.parametrize(("command", "probe", "starts"), [
    (["uv", "run", "train.py"], ["uv", "run", "python"], "command uv run as given"),
    (["/opt/py/bin/python3.12", "train.py"], ["/opt/py/bin/python3.12"], "interpreter /opt"),
    (["sh", "train.sh"], [], "command sh as given (not a Python interpreter"),
])
def test_other_commands_run_as_given(tmp_path: Path, command: list[str], probe: list[str],
                                     starts: str) -> None:
    venv_python(tmp_path)  # a venv does not rewrite what is not `python`
    config = conf(tmp_path, train_command=command)
    setup = train_env.local_setup(config, config.model, tmp_path.resolve())  # type: ignore[arg-type]
    assert setup.argv == command and setup.probe == probe
    assert setup.description.startswith(starts)


def test_resolve_command_keeps_its_old_default() -> None:
    assert resolve_command(["python", "x.py"]) == [sys.executable, "x.py"]
    assert resolve_command(["python", "x.py"], "/p/.venv/bin/python")[0] == "/p/.venv/bin/python"
    assert resolve_command(["uv", "run", "x.py"], "/p/.venv/bin/python")[0] == "uv"


# ---------------------------------------------------------------- probe and tags


def test_cis_own_interpreter_answers_in_process() -> None:
    seen = train_env.probe(train_env.Setup([sys.executable], "x", [sys.executable]),
                           ["pytest", "no-such-dist-xyz"], Path.cwd())
    assert seen.python == platform.python_version() and not seen.error
    assert set(seen.packages) == {"pytest"}


def test_a_probe_that_cannot_run_is_data_not_a_crash(tmp_path: Path) -> None:
    seen = train_env.probe(train_env.Setup(["x"], "x", [str(tmp_path / "nope")]), ["numpy"],
                           tmp_path)
    assert seen.error and not seen.packages
    tags = train_env.env_tags(train_env.Setup(["x"], "interpreter x (why)"), seen)
    assert tags[train_env.ENV_TAG] == "interpreter x (why)"
    assert train_env.PACKAGES_TAG not in tags and "maci.train.env.error" in tags


def test_probe_names_are_the_key_packages_and_every_pkg_input(tmp_path: Path) -> None:
    model = conf(tmp_path, inputs=["pkg:scikit-learn", "pkg:tokenizers", "train.py"]).model
    assert model is not None
    assert train_env.probe_names(model) == [*train_env.KEY_PACKAGES, "tokenizers"]


def test_env_tags_record_interpreter_python_and_packages_as_json() -> None:
    seen = train_env.Probe(python="3.11.2", executable="/p/.venv/bin/python",
                           packages={"numpy": "1.24.2", "joblib": "1.2.0"})
    setup = train_env.Setup(["/p/.venv/bin/python"], "interpreter /p/.venv/bin/python "
                            "(project .venv)", ["/p/.venv/bin/python"])
    tags = train_env.env_tags(setup, seen)
    assert tags[train_env.PYTHON_TAG] == "3.11.2"
    assert json.loads(tags[train_env.PACKAGES_TAG]) == {"joblib": "1.2.0", "numpy": "1.24.2"}
    assert train_env.IMAGE_TAG not in tags


# ---------------------------------------------------------------- pkg: hashing


def test_pkg_versions_come_from_the_training_interpreter_when_given(tmp_path: Path) -> None:
    ours = collect(tmp_path, ["pkg:pytest"], {}, ["python"])
    theirs = collect(tmp_path, ["pkg:pytest"], {}, ["python"], packages={"pytest": "0.0.1"},
                     seen_by="interpreter /p/.venv/bin/python")
    assert theirs.identity["packages"] == {"pytest": "0.0.1"}
    assert theirs.digest != ours.digest
    with pytest.raises(ConfigError, match=r"pkg:numpy.*no such installed distribution in "
                                          r"interpreter /p/\.venv/bin/python"):
        collect(tmp_path, ["pkg:numpy"], {}, ["python"], packages={},
                seen_by="interpreter /p/.venv/bin/python")


def test_cis_interpreter_still_hashes_pkg_entries_in_process(tmp_path: Path) -> None:
    """No venv: the same identity as before this feature (a rerun keeps reusing)."""
    config = conf(tmp_path, inputs=["pkg:pytest"])
    assert model_inputs(config).digest == collect(
        tmp_path, ["pkg:pytest"], {}, ["python", "train.py"]).digest


# ---------------------------------------------------------------- MACI_OUTPUT_DIR


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_outputs_are_read_metrics_params_and_artifact_paths(tmp_path: Path) -> None:
    write(tmp_path, "metrics.json", '{"accuracy": 0.9, "n": 3}')
    write(tmp_path, "params.json", '{"C": 1.0, "kind": "linear", "scaled": true}')
    write(tmp_path, "artifacts/serving/model.json", "{}")
    write(tmp_path, "artifacts/README", "x")
    found = train_outputs.read(tmp_path)
    assert found.metrics == {"accuracy": 0.9, "n": 3.0}
    assert found.params == {"C": "1.0", "kind": "linear", "scaled": "True"}
    assert found.artifacts == ["README", "serving/model.json"]


def test_an_empty_output_dir_is_fine(tmp_path: Path) -> None:
    assert train_outputs.read(tmp_path).empty


@pytest.mark.parametrize(("name", "text", "match"), [
    ("metrics.json", '{"accuracy": 0.9,', r"^train wrote a bad metrics\.json in "
     r"MACI_OUTPUT_DIR: not JSON \(Expecting property name"),
    ("metrics.json", '{"accuracy": "high"}', r"metric 'accuracy' is \"high\", not a number$"),
    ("metrics.json", '{"ok": true}', r"metric 'ok' is true, not a number"),
    ("metrics.json", '{"loss": NaN}', r"metric 'loss' is nan, not a finite number"),
    ("metrics.json", "[0.9]", r"want a JSON object \{name: value\}, got list"),
    ("params.json", '{"layers": [1, 2]}', r"bad params\.json .*param 'layers' is \[1, 2\], "
     "not a scalar"),
])
def test_a_bad_output_file_is_one_line_naming_it(tmp_path: Path, name: str, text: str,
                                                 match: str) -> None:
    write(tmp_path, name, text)
    with pytest.raises(StepFailed, match=match) as info:
        train_outputs.read(tmp_path)
    assert "\n" not in info.value.message and info.value.step == "train outputs"


# ---------------------------------------------------------------- config


def test_container_config_defaults_and_normalises(tmp_path: Path) -> None:
    model = conf(tmp_path, container={"platform": "aarch64"}).model
    assert model is not None and model.container is not None
    assert (model.container.target, model.container.platform) == ("train", "linux/arm64")
    assert model.container.dockerfile is None and model.container.context is None


@pytest.mark.parametrize(("container", "where"), [
    ({"image": "x"}, "model.container.image"),
    ({"context": "../elsewhere"}, "model.container.context"),
    ({"platform": "linux/nope"}, "model.container.platform"),
])
def test_container_config_errors_name_the_field(tmp_path: Path, container: dict[str, Any],
                                                where: str) -> None:
    with pytest.raises(ConfigError) as info:
        conf(tmp_path, container=container)
    assert [p.path for p in info.value.problems] == [where]


def test_check_command_reaches_every_platform_job(tmp_path: Path) -> None:
    config = conf(tmp_path, check_command="python3 -c 'import pickle'")
    job = PlatformJob(platform="linux/arm64", placement=Placement(kind="native", runner="a"))
    spec = spec_for(config, job, SourceInfo(), "r", "out")
    assert spec.model_check == ["python3", "-c", "import pickle"]
    assert spec_for(conf(tmp_path), job, SourceInfo(), "r", "out").model_check == []
