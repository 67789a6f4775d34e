"""Training in the project's environment, for real: a project venv made by `python -m venv`,
a container built from the project's Dockerfile `train` target on the local Docker daemon,
and `[model] check_command` in the release image (embedded sqlite MLflow store, no mocks).

The scripts are stdlib-only and write MACI_OUTPUT_DIR: the library logs their metrics,
params and artifacts, so neither the venv nor the image has mlflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from ci.adapters.engines.docker import DockerEngine
from ci.core import config as cfg
from ci.core.config import Config
from ci.core.errors import ConfigError, StepFailed
from ci.core.jobs import spec_for
from ci.core.plan import Placement, PlatformJob
from ci.core.results import PlatformResult, SourceInfo
from ci.stages.model import materialize_model, train_and_gate
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.procs import require, require_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

SOURCE = SourceInfo(sha="9" * 40, branch="main", provider="local")
BASE_AMD64 = "maci/python:bookworm-amd64"
FAKE_DIST = "maci-fake-dist"
TRAIN = '''
import json, os, pathlib, sys
out = pathlib.Path(os.environ["MACI_OUTPUT_DIR"])
params = json.loads(os.environ["MACI_PARAMS"])
(out / "metrics.json").write_text(json.dumps({"accuracy": 0.91, "rows": 10}))
(out / "params.json").write_text(json.dumps({"solver": "stdlib", "C": params["C"]}))
(out / "artifacts" / "serving").mkdir(parents=True)
model = {"prefix": sys.prefix, "C": params["C"], "mlflow": "MLFLOW_RUN_ID" in os.environ}
(out / "artifacts" / "serving" / "model.json").write_text(json.dumps(model))
if params.get("broken"):
    (out / "metrics.json").write_text('{"accuracy": "high"}')
'''


def make(root: Path, toml: str, files: dict[str, str | bytes], **model: Any) -> Config:
    root.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body) if isinstance(body, bytes) else path.write_text(body)
    source = str(root / "ci.toml")
    (root / "ci.toml").write_text(toml)
    data = cfg.extract(cfg.parse_toml(toml, source), source)
    data["model"] = {**data["model"], **model}
    return cfg.validate(data, source, str(root))


def client(conf: Config) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=conf.tracking_uri(), registry_uri=conf.tracking_uri())


def stage(conf: Config, run: str = "p1") -> Any:
    return train_and_gate(conf, SOURCE, run, environ=dict(os.environ))


# ---------------------------------------------------------------- (a) the project's venv

VENV_TOML = """
[project]
name = "venvproj"
image = "127.0.0.1:5000/venvproj"

[model]
train_command = ["python", "train.py"]
registered_model = "venv-model"
inputs = ["train.py", "pkg:maci-fake-dist"]
params = { C = 0.5 }

[model.artifact]
path = "serving/model.json"

[model.thresholds.accuracy]
threshold = 0.8
"""


def fake_dist(venv_python: Path, version: str) -> None:
    """A distribution only the project venv has (its METADATA is all importlib reads)."""
    purelib = subprocess.run([str(venv_python), "-c", "import sysconfig; "
                              "print(sysconfig.get_path('purelib'))"], capture_output=True,
                             text=True, check=True).stdout.strip()
    info = Path(purelib) / "maci_fake_dist-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {FAKE_DIST}\n"
                                   f"Version: {version}\n")


@pytest.fixture(scope="module")
def venv_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    root = tmp_path_factory.mktemp("venv") / "proj"
    conf = make(root, VENV_TOML, {"train.py": TRAIN})
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")],
                   check=True, timeout=120)
    python = root.resolve() / ".venv" / "bin" / "python"
    fake_dist(python, "1.2.3")
    return conf, python


def test_a_project_venv_trains_by_default_and_is_recorded(
        venv_project: tuple[Config, Path]) -> None:
    conf, python = venv_project
    result = stage(conf)
    assert result.passed and result.version == "1", result.decision.reasons
    assert f"in interpreter {python} (project .venv)" in result.training.message

    run = client(conf).get_run(result.training.run_id)
    tags = run.data.tags
    assert tags["maci.train.env"] == f"interpreter {python} (project .venv)"
    assert json.loads(tags["maci.train.command"]) == [str(python), "train.py"]
    venv_version = subprocess.run([str(python), "-c", "import platform; "
                                   "print(platform.python_version())"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    assert tags["maci.train.python"] == venv_version
    # read BY the venv's interpreter: its fake dist, none of ci's (ci has mlflow, numpy...)
    assert json.loads(tags["maci.train.packages"]) == {FAKE_DIST: "1.2.3"}
    assert run.data.metrics == {"accuracy": 0.91, "rows": 10.0}
    assert run.data.params == {"C": "0.5", "solver": "stdlib"}

    model = materialize_model(conf, "1")
    served = json.loads((Path(model.directory) / "model.json").read_text())
    assert served == {"prefix": str(python.parent.parent), "C": 0.5, "mlflow": True}


def test_pkg_inputs_are_read_by_the_training_interpreter(
        venv_project: tuple[Config, Path]) -> None:
    conf, python = venv_project
    first = stage(conf, "h1")
    assert stage(conf, "h2").training.reused
    fake_dist(python, "1.2.4")  # only the venv changes: ci's own packages are the same
    try:
        again = stage(conf, "h3")
        assert not again.training.reused
        assert again.training.reason == f"retrained: pkg:{FAKE_DIST} changed"
        assert again.training.input_hash != first.training.input_hash
    finally:
        fake_dist(python, "1.2.3")

    inputs = ["train.py", "pkg:mlflow"]  # ci has mlflow; the project venv does not
    with pytest.raises(ConfigError, match=rf"pkg:mlflow.*no such installed distribution in "
                                          rf"interpreter {python} \(project \.venv\)"):
        stage(conf.model_copy(update={"model": conf.model.model_copy(  # type: ignore[union-attr]
            update={"inputs": inputs})}), "h4")


def test_a_bad_metrics_file_fails_the_run_with_one_line(
        venv_project: tuple[Config, Path]) -> None:
    conf, _ = venv_project
    broken = conf.model_copy(update={"model": conf.model.model_copy(  # type: ignore[union-attr]
        update={"params": {"C": 0.5, "broken": True}, "registered_model": "broken-model"})})
    with pytest.raises(StepFailed) as info:
        stage(broken, "b1")
    message = info.value.message
    assert message.startswith("train wrote a bad metrics.json in MACI_OUTPUT_DIR: metric "
                              "'accuracy' is \"high\", not a number (run ")
    run_id = message.rsplit("(run ", 1)[1].rstrip(")")
    assert client(conf).get_run(run_id).info.status == "FAILED"


# ---------------------------------------------------------------- (b) a training container

BOX_TOML = """
[project]
name = "boxproj"
image = "127.0.0.1:5000/boxproj"

[build]
base_image = "maci/python:bookworm-{debian_arch}"
target = "runtime"

[test]
command = ["true"]

[model]
train_command = ["python3", "train.py"]
registered_model = "box-model"
inputs = ["train.py", "Dockerfile"]
params = { C = 2.0 }

[model.container]
target = "train"

[model.artifact]
path = "model.json"
"""
BOX_DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS train
LABEL dev.maci.test=train-env

FROM ${BASE} AS test

FROM ${BASE} AS runtime
# a numpy 1.x stand-in: no numpy._core (what a numpy 2 pickle refers to)
COPY fake_numpy/ /usr/lib/python3/dist-packages/numpy/
COPY model/ /srv/model/
"""
BOX_TRAIN = '''
import json, os, pathlib, platform
out = pathlib.Path(os.environ["MACI_OUTPUT_DIR"])
try:
    pathlib.Path("written.txt").write_text("x")
    writable = 1
except OSError:
    writable = 0
mlflow_env = int(any(k.startswith("MLFLOW_") for k in os.environ))
metrics = {"accuracy": 0.88, "src_writable": writable, "mlflow_env": mlflow_env}
(out / "metrics.json").write_text(json.dumps(metrics))
(out / "artifacts").mkdir()
model = {"machine": platform.machine(), "cwd": os.getcwd(), "out": str(out),
         "params": json.loads(os.environ["MACI_PARAMS"])}
(out / "artifacts" / "model.json").write_text(json.dumps(model))
'''
# what pickle.dumps(numpy.array(...)) under numpy 2 starts with: a global in numpy._core
NUMPY2_PICKLE = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\nq\x00."


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    require_tool("docker")
    has_base = subprocess.run(["docker", "image", "inspect", BASE_AMD64],
                              capture_output=True).returncode == 0
    require(has_base, f"{BASE_AMD64} is not in the local Docker image store")
    root = tmp_path_factory.mktemp("box") / "proj"
    yield make(root, BOX_TOML, {
        "Dockerfile": BOX_DOCKERFILE, "train.py": BOX_TRAIN,
        "fake_numpy/__init__.py": "__version__ = '1.24.2'\n",
        "model/model.pkl": NUMPY2_PICKLE, "model/model.json": "{}",
    })
    subprocess.run(["docker", "rmi", "--force", "maci-train/boxproj:linux-amd64",
                    "maci-test/boxproj:linux-amd64", "127.0.0.1:5000/boxproj:maci-linux-amd64"],
                   capture_output=True)


def test_training_in_the_train_target_on_the_native_platform(box: Config) -> None:
    result = stage(box)
    assert result.passed and result.version == "1", result.decision.reasons

    run = client(box).get_run(result.training.run_id)
    tags = run.data.tags
    image = tags["maci.train.image"]
    assert image.startswith("sha256:") and tags["maci.train.platform"] == "linux/amd64"
    assert tags["maci.train.env"] == (f"container maci-train/boxproj:linux-amd64 {image[:19]} "
                                      "(linux/amd64, target train)")
    inspected = subprocess.run(["docker", "image", "inspect", image, "--format",
                                "{{index .Config.Labels \"dev.maci.test\"}}"],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert inspected == "train-env", "the image is the Dockerfile's train target"
    assert tags["maci.train.python"] == "3.11.2", "the image's python, not ci's"
    assert json.loads(tags["maci.train.packages"]) == {}, "Debian's python3 + pytest only"
    assert run.data.metrics == {"accuracy": 0.88, "src_writable": 0.0, "mlflow_env": 0.0}

    served = json.loads((Path(materialize_model(box, "1").directory) / "model.json").read_text())
    assert served == {"machine": "x86_64", "cwd": "/src", "out": "/out",
                      "params": {"C": 2.0}}
    assert not (box.root_path / "written.txt").exists(), "/src is mounted read-only"


def test_container_outputs_reach_a_tracking_server_too(box: Config,
                                                       mlflow_server: MlflowServer) -> None:
    """The container never talks to the server: the library logs /out through its client."""
    remote = box.model_copy(update={"mlflow": box.mlflow.model_copy(
        update={"tracking_uri": mlflow_server.uri})})
    result = stage(remote, "s1")
    assert result.passed and result.new_version, result.decision.reasons
    run = client(remote).get_run(result.training.run_id)
    assert run.data.metrics["mlflow_env"] == 0.0
    assert run.data.tags["maci.train.image"].startswith("sha256:")
    served = materialize_model(remote, result.version or "", Path(box.root) / "from-server")
    assert json.loads(Path(served.directory, "model.json").read_text())["cwd"] == "/src"


# ---------------------------------------------------------------- serving compatibility


def job(conf: Config, out: Path) -> PlatformResult:
    placed = PlatformJob(platform="linux/amd64", placement=Placement(kind="native",
                                                                     runner="local"))
    spec = spec_for(conf, placed, SOURCE, "check-run", out)
    return anyio.run(DockerEngine(push=False).run_job, spec)


def test_a_model_the_image_cannot_load_fails_its_platform_with_the_reason(
        box: Config, tmp_path: Path) -> None:
    load = "import pickle; pickle.load(open('/srv/model/model.pkl', 'rb'))"
    model = box.model.model_copy(update={"check_command": ["python3", "-c", load]})  # type: ignore[union-attr]
    result = job(box.model_copy(update={"model": model}), tmp_path)

    assert result.status == "failed" and result.digest is None
    failure = result.failure
    assert failure is not None and failure.step == "model check"
    assert failure.message == ("model check failed on linux/amd64: "
                               "ModuleNotFoundError: No module named 'numpy._core'")
    assert failure.command == ["python3", "-c", load] and failure.exit_code == 1
    assert "Traceback" in failure.stderr_tail
    assert set(result.durations) == {"build_test", "test", "build_release", "model_check"}


def test_a_loadable_model_passes_the_check(box: Config, tmp_path: Path) -> None:
    load = "import json; json.load(open('/srv/model/model.json'))"
    model = box.model.model_copy(update={"check_command": ["python3", "-c", load]})  # type: ignore[union-attr]
    result = job(box.model_copy(update={"model": model}), tmp_path)
    assert (result.status, result.failure) == ("passed", None)
    assert "model_check" in result.durations
    assert (tmp_path / "linux-amd64" / "model-check.log").exists()
