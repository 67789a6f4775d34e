"""Inputs that really decide reuse, and the model artifact handoff, on the embedded sqlite
MLflow store with a real (tiny) training script: no server, no mocks.

The script logs a metric, a binary `model.joblib` (unless told not to) and an MLflow model,
so the real train → gate → check → register → materialize path runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ci.commands.train import run_train
from ci.core import config as cfg
from ci.core.config import Config
from ci.core.errors import StepFailed, TrackingError
from ci.core.results import SourceInfo
from ci.stages.model import materialize_model, train_and_gate
from tests.fixtures.procs import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

SOURCE = SourceInfo(sha="7" * 40, branch="main", provider="local")
SECRET = "hunter2-do-not-print"
TRAIN = '''
import json, os, pathlib, tempfile
import joblib, mlflow
from mlflow.entities import LoggedModelOutput

params = json.loads(os.environ["MACI_PARAMS"])
with mlflow.start_run():
    mlflow.log_metric("accuracy", 0.9)
    out = pathlib.Path(tempfile.mkdtemp())  # never in the project: `**` would see it
    (out / "serving" / "extra").mkdir(parents=True, exist_ok=True)
    weights = bytes(range(256)) * params.get("n", 4)
    joblib.dump({"weights": weights, "features": os.environ.get("FEATURES")}, out / "model.joblib")
    if params.get("artifact", True):
        mlflow.log_artifact(str(out / "model.joblib"))
    (out / "serving" / "model.json").write_text(json.dumps({"n": params.get("n", 4)}))
    (out / "serving" / "extra" / "vocab.txt").write_text("a\\nb\\n")
    mlflow.log_artifacts(str(out / "serving"), "serving")
    model = mlflow.initialize_logged_model(name="model")
    (out / "mlmodel").mkdir(exist_ok=True)
    (out / "mlmodel" / "MLmodel").write_text("flavors: {}\\n")
    mlflow.MlflowClient().log_model_artifacts(model.model_id, str(out / "mlmodel"))
    mlflow.finalize_logged_model(model.model_id, "READY")
    mlflow.log_outputs(models=[LoggedModelOutput(model.model_id, step=0)])
'''
TOML = """
[project]
name = "tiny"
image = "127.0.0.1:5000/tiny"

[model]
train_command = ["python", "train.py"]
registered_model = "tiny-model"
inputs = ["train.py", "env:FEATURES"]

[model.artifact]
path = "model.joblib"
"""


def project(root: Path, **model: Any) -> Config:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN)
    (root / "ci.toml").write_text(TOML)
    source = str(root / "ci.toml")
    data = cfg.extract(cfg.parse_toml(TOML, source), source)
    data["model"] = {**data["model"], **model}
    return cfg.validate(data, source, str(root))


def client(conf: Config) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=conf.tracking_uri(), registry_uri=conf.tracking_uri())


def env(features: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "FEATURES"}
    return out if features is None else out | {"FEATURES": features}


def stage(conf: Config, features: str | None = "all", run: str = "p1", retrain: str = "") -> Any:
    return train_and_gate(conf, SOURCE, run, environ=env(features), retrain=retrain)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return project(tmp_path_factory.mktemp("inputs") / "tiny")


# ---------------------------------------------------------------- item 3: inputs and reuse


def test_env_change_retrains_and_the_reason_names_the_var(shared: Config) -> None:
    first = stage(shared, SECRET)
    assert not first.training.reused
    assert first.training.reason == "trained: no earlier finished run in the experiment"

    again = stage(shared, SECRET, "p2")
    assert again.training.reused and again.training.run_id == first.training.run_id
    assert again.training.reason.startswith(f"reused run {first.training.run_id[:12]}: "
                                            "inputs unchanged (hash ")

    changed = stage(shared, "two", "p3")
    assert not changed.training.reused
    assert changed.training.run_id != first.training.run_id
    assert changed.training.reason == "retrained: env:FEATURES changed"

    unset = stage(shared, None, "p4")
    assert unset.training.reason == "retrained: env:FEATURES changed"
    empty = stage(shared, "", "p5")
    assert not empty.training.reused, "an empty value is not the same as unset"

    run = client(shared).get_run(first.training.run_id)
    recorded = json.dumps([run.data.tags, run.data.params, first.model_dump(mode="json")])
    assert SECRET not in recorded, "the value of an env input is never stored"
    assert "env:FEATURES" in json.loads(run.data.tags["maci.inputs"])


def test_retrain_makes_a_new_run_even_when_nothing_changed(shared: Config) -> None:
    before = stage(shared, "stable", "r1")
    forced = run_train(shared, env("stable"), retrain=True)
    assert not forced.training.reused
    assert forced.training.run_id != before.training.run_id
    assert forced.training.reason == "retrained: --retrain (inputs unchanged)"
    assert forced.version is not None and forced.new_version, "the new run is registered"
    assert client(shared).get_run(forced.training.run_id).data.tags["maci.train.reason"] == \
        forced.training.reason

    after = stage(shared, "stable", "r3")
    assert after.training.reused and after.training.run_id == forced.training.run_id


def test_ci_train_prints_the_reason(shared: Config) -> None:
    ci = Path(sys.executable).parent / "ci"
    root = shared.root_path
    base = [str(ci), "train", "--config", str(root / "ci.toml")]
    stage(shared, "printed", "c0")
    reused = subprocess.run(base, cwd=root, env=env("printed"), capture_output=True,
                            text=True, timeout=120)
    assert reused.returncode == 0, reused.stderr
    assert "reused run" in reused.stdout and "inputs unchanged" in reused.stdout
    forced = subprocess.run([*base, "--retrain"], cwd=root, env=env("printed"),
                            capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert "retrained: --retrain (inputs unchanged)" in forced.stdout
    assert "printed" not in forced.stdout.replace("--config", "")


# ---------------------------------------------------------------- item 1: artifact handoff


def test_binary_artifact_is_handed_off_under_its_own_name(shared: Config, tmp_path: Path) -> None:
    result = stage(shared, "handoff", "h1")
    assert result.version is not None
    mlflow = client(shared)
    original = Path(mlflow.download_artifacts(result.training.run_id, "model.joblib",
                                              str(tmp_path))).read_bytes()
    sha = hashlib.sha256(original).hexdigest()
    tags = mlflow.get_model_version("tiny-model", result.version).tags
    assert tags["maci.model.sha256"] == sha
    assert tags["maci.model.artifact"] == "run:model.joblib"

    got = materialize_model(shared, result.version)
    folder = shared.root_path / "model"
    assert Path(got.directory) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["model.joblib", "registered.json"]
    assert (folder / "model.joblib").read_bytes() == original
    assert got.sha256 == sha and got.files == ["model.joblib"]
    assert got.build_args()["MODEL_SHA256"] == sha
    registered = json.loads((folder / "registered.json").read_text())
    assert registered["version"] == result.version and registered["sha256"] == sha
    assert not (shared.state_path / "handoff").exists() or \
        not any((shared.state_path / "handoff").iterdir()), "staging is cleaned up"


def test_missing_artifact_registers_nothing(tmp_path: Path) -> None:
    conf = project(tmp_path / "p", params={"artifact": False}, registered_model="missing")
    with pytest.raises(StepFailed) as err:
        stage(conf)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "logged no model.joblib (model.artifact.path)" in message
    assert "nothing registered" in message
    assert client(conf).search_model_versions("name = 'missing'") == []


def test_a_folder_artifact_lands_as_its_contents_and_replaces_the_last_one(
    tmp_path: Path,
) -> None:
    conf = project(tmp_path / "p", artifact={"path": "serving", "dest": "build/model"})
    first = stage(conf)
    got = materialize_model(conf, first.version or "")
    folder = tmp_path / "p" / "build" / "model"
    assert got.files == ["extra/vocab.txt", "model.json"]
    assert json.loads((folder / "model.json").read_text()) == {"n": 4}
    (folder / "keep.txt").write_text("the user's own file")

    (tmp_path / "p" / "train.py").write_text(TRAIN.replace('"a\\nb\\n"', '"c\\n"'))
    second = stage(conf, run="p2")
    assert second.version != first.version
    materialize_model(conf, second.version or "")
    assert (folder / "extra" / "vocab.txt").read_text() == "c\n"
    assert (folder / "keep.txt").exists(), "only the files of the last handoff are replaced"


def test_the_mlflow_model_directory_can_be_handed_off(tmp_path: Path) -> None:
    conf = project(tmp_path / "p", artifact={"source": "model"})
    result = stage(conf)
    got = materialize_model(conf, result.version or "")
    assert "MLmodel" in got.files
    assert (Path(got.directory) / "MLmodel").read_text() == "flavors: {}\n"
    tags = client(conf).get_model_version("tiny-model", result.version).tags
    assert tags["maci.model.artifact"] == "model:" and tags["maci.model.sha256"] == got.sha256


def test_other_bytes_than_the_registered_ones_are_refused(tmp_path: Path) -> None:
    conf = project(tmp_path / "p")
    result = stage(conf)
    stored = next((conf.state_path / "mlartifacts").rglob("model.joblib"))
    stored.write_bytes(stored.read_bytes() + b"tampered")
    with pytest.raises(TrackingError, match="refusing to build other bytes"):
        materialize_model(conf, result.version or "")
    assert not (tmp_path / "p" / "model" / "model.joblib").exists()


def test_handed_off_files_never_change_the_input_hash(tmp_path: Path) -> None:
    """`inputs = ["**"]` takes the whole project, but not the model we put in it."""
    conf = project(tmp_path / "p", inputs=["**"])
    first = stage(conf)
    materialize_model(conf, first.version or "")
    again = stage(conf, run="p2")
    assert again.training.reused, again.training.reason


def test_the_image_holds_exactly_the_registered_bytes(shared: Config, tmp_path: Path) -> None:
    """The release build (DockerEngine, the spec `with_model` made) embeds the handed-off
    file byte for byte, and labels it with the sha256 tagged on the version."""
    from ci.adapters.engines.docker import DockerEngine
    from ci.core.jobs import spec_for, with_model
    from ci.core.plan import Placement, PlatformJob

    docker = require_tool("docker")
    root = shared.root_path
    (root / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY model/ /srv/model/\n")
    result = stage(shared, "image", "i1")
    got = materialize_model(shared, result.version or "")
    sha = client(shared).get_model_version("tiny-model", result.version).tags["maci.model.sha256"]
    job = PlatformJob(platform="linux/amd64", placement=Placement(kind="native", runner="local"))
    spec = spec_for(shared, job, SOURCE, "img-1", tmp_path / "out").model_copy(
        update={"build_args": {"BASE": "maci/python:bookworm-amd64"}})
    [spec] = with_model([spec], got.build_args())
    tag = f"maci-it/handoff:{os.getpid()}"
    try:
        DockerEngine(push=False).build(spec, target=None, step="build_release", labels=True,
                                       iidfile=tmp_path / "iid", tag=tag,
                                       log_path=tmp_path / "build.log")
        labels = json.loads(subprocess.run(
            [docker, "image", "inspect", tag, "--format", "{{json .Config.Labels}}"],
            capture_output=True, text=True, check=True, timeout=60).stdout)
        assert labels["dev.maci.model.sha256"] == sha == got.sha256
        assert labels["dev.maci.model.version"] == result.version
        name = f"maci-handoff-{os.getpid()}"
        subprocess.run([docker, "create", "--name", name, tag], capture_output=True, check=True,
                       timeout=60)
        try:
            subprocess.run([docker, "cp", f"{name}:/srv/model/model.joblib",
                            str(tmp_path / "baked")], capture_output=True, check=True, timeout=60)
        finally:
            subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60)
        baked = (tmp_path / "baked").read_bytes()
        registered = Path(client(shared).download_artifacts(
            result.training.run_id, "model.joblib", str(tmp_path / "dl"))).read_bytes()
        assert baked == registered
        assert hashlib.sha256(baked).hexdigest() == sha
    finally:
        subprocess.run([docker, "image", "rm", "-f", tag], capture_output=True, timeout=60)
