"""The example service: its own tests pass on the host python, the serving app answers
with a model trained and registered by the pipeline (and agrees with scikit-learn), the
image stages build, and the manifests render."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.core import config as cfg
from ci.core.results import SourceInfo
from ci.stages.model import materialize_model, train_and_gate
from tests.fixtures.procs import ServerProcess, free_port, require_tool, start_server

pytestmark = pytest.mark.integration

WINE = Path(__file__).resolve().parents[2] / "examples" / "wine"


def test_example_unit_tests_pass_with_the_host_python() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=WINE, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert " passed" in res.stdout and "failed" not in res.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The example trained, gated and registered on its embedded store, then materialized."""
    root = tmp_path_factory.mktemp("wine-app") / "wine"
    shutil.copytree(WINE, root, ignore=shutil.ignore_patterns(".maci", "model", "__pycache__"))
    conf = cfg.load(root / "ci.toml", {}, root)
    result = train_and_gate(conf, SourceInfo(sha="9" * 40), "app-test", environ=dict(os.environ))
    assert result.passed
    return root, materialize_model(conf, result.version or "")


def _get(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def app(trained: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root, got = trained
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODEL_DIR": got.directory, "PORT": str(port), "HOST": "127.0.0.1"}
    server: ServerProcess = start_server(
        "wine-app", [sys.executable, "-m", "app.server"], cwd=root, env=env, port=port,
        log_dir=tmp_path_factory.mktemp("wine-app-log"),
        ready=lambda: _get(url + "/health")["status"] == "ok", timeout=20,
    )
    try:
        yield url
    finally:
        server.stop()


def test_served_model_is_the_registered_version(app: str, trained: tuple[Path, Any]) -> None:
    _, got = trained
    health = _get(app + "/health")
    assert health["model"]["name"] == "wine-classifier"
    assert health["model"]["version"] == got.version == "1"
    assert health["model"]["uri"] == "models:/wine-classifier/1"
    assert len(health["model"]["features"]) == 13


def test_predictions_match_scikit_learn(app: str, trained: tuple[Path, Any]) -> None:
    """The stdlib app reproduces the MLflow-logged sklearn pipeline on every wine."""
    import mlflow.sklearn
    from mlflow import MlflowClient
    from sklearn.datasets import load_wine

    root, got = trained
    uri = f"sqlite:///{root / '.maci' / 'mlflow.db'}"
    source = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(
        got.name, got.version).source
    pipeline = mlflow.sklearn.load_model(source)
    data = load_wine(as_frame=True)
    expected = [data.target_names[i] for i in pipeline.predict(data.data)]
    instances = [{k: float(v) for k, v in row.items()} for _, row in data.data.iterrows()]
    served = _get(app + "/predict", {"instances": instances})["predictions"]
    assert [p["class"] for p in served] == expected
    single = _get(app + "/predict", {"features": instances[0]})
    assert single["class"] == "class_0" and single["model"]["version"] == got.version


def test_smoke_payload_in_ci_toml_is_accepted(app: str) -> None:
    conf = cfg.load(WINE / "ci.toml", {}, WINE)
    assert conf.smoke is not None
    assert _get(app + conf.smoke.predict_path, conf.smoke.payload)["class"] == "class_0"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_image_stages_build_and_test_per_platform(
    trained: tuple[Path, Any], arch: str
) -> None:
    """test stage runs the example's tests (arm64 under qemu); runtime carries the model
    and the label naming the registered version."""
    docker = require_tool("docker")
    root, got = trained
    base = f"maci/python:bookworm-{arch}"
    tag = f"maci-it/wine:{arch}-{os.getpid()}"

    def build(target: str, *args: str) -> None:
        res = subprocess.run(
            [docker, "buildx", "build", "--platform", f"linux/{arch}", "--build-arg",
             f"BASE={base}", "--target", target, "-t", f"{tag}-{target}", "--load", *args, "."],
            cwd=root, capture_output=True, text=True, timeout=600,
        )
        assert res.returncode == 0, res.stderr[-2000:]

    try:
        build("test")
        tests = subprocess.run(
            [docker, "run", "--rm", "--platform", f"linux/{arch}", f"{tag}-test",
             "python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
            capture_output=True, text=True, timeout=300,
        )
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert " passed" in tests.stdout

        build("runtime", *[f"--build-arg={k}={v}" for k, v in got.build_args().items()])
        inspect = subprocess.run([docker, "image", "inspect", f"{tag}-runtime"],
                                 capture_output=True, text=True, timeout=60)
        image = json.loads(inspect.stdout)[0]
        assert image["Architecture"] == arch
        labels = image["Config"]["Labels"]
        assert labels["dev.maci.model.version"] == got.version
        assert labels["dev.maci.model.uri"] == got.uri
        baked = subprocess.run(
            [docker, "run", "--rm", "--platform", f"linux/{arch}", f"{tag}-runtime",
             "cat", "/srv/model/registered.json"], capture_output=True, text=True, timeout=120)
        assert json.loads(baked.stdout)["version"] == got.version
    finally:
        subprocess.run([docker, "image", "rm", "-f", f"{tag}-test", f"{tag}-runtime"],
                       capture_output=True, timeout=60)


def test_manifests_render_with_kustomize() -> None:
    kubectl = require_tool("kubectl")
    res = subprocess.run([kubectl, "kustomize", str(WINE / "k8s")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "image: 127.0.0.1:5000/examples/wine:latest" in res.stdout
    assert "kind: Rollout" in res.stdout and "kind: AnalysisTemplate" in res.stdout
    assert "name: model-version" in res.stdout
