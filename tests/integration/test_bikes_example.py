"""examples/bikes without the release: its own tests on the host python, train.py's outputs
(what the library logs) reproduced by the serving code, the config the e2e relies on, and
the train stage really training with Debian's numpy (a container on the local daemon)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ci.core import config as cfg
from ci.core.jobs import expand_base
from ci.core.platforms import parse
from tests.fixtures.procs import require, require_tool

pytestmark = pytest.mark.integration

BIKES = Path(__file__).resolve().parents[2] / "examples" / "bikes"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MACI_", "MLFLOW_"))}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def test_example_unit_tests_pass_with_the_host_python() -> None:
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                         cwd=BIKES, capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert " passed" in res.stdout and "failed" not in res.stdout


def _train(out: Path, params: dict[str, object] | None = None) -> dict[str, float]:
    res = subprocess.run([sys.executable, "train.py"], cwd=BIKES, capture_output=True, text=True,
                         timeout=120, env=_env(MACI_OUTPUT_DIR=str(out),
                                               MACI_PARAMS=json.dumps(params or {})))
    assert res.returncode == 0, res.stderr
    return json.loads((out / "metrics.json").read_text())  # type: ignore[no-any-return]


def test_train_outputs_are_what_the_gate_and_the_app_need(tmp_path: Path) -> None:
    metrics = _train(tmp_path)
    conf = cfg.load(BIKES / "ci.toml", {}, BIKES)
    assert conf.model is not None
    limits = conf.model.thresholds
    assert all(not t.greater_is_better for t in limits.values())
    assert metrics["rmse"] <= (limits["rmse"].threshold or 0)
    assert metrics["mae"] <= (limits["mae"].threshold or 0)
    coef_file = tmp_path / "artifacts" / conf.model.artifact.artifact_path
    assert coef_file.is_file() and coef_file.read_bytes()[:6] == b"\x93NUMPY"
    # deterministic: the same params give the same bytes (so the same sha256)
    again = tmp_path / "again"
    again.mkdir()
    _train(again)
    assert hashlib.sha256(coef_file.read_bytes()).digest() == hashlib.sha256(
        (again / "artifacts" / "model" / "coef.npy").read_bytes()).digest()
    # the serving code (app/, in its own process: `app` is also wine's package name)
    # reproduces the logged rmse from the file alone, and answers the smoke payload
    assert conf.smoke is not None
    script = (
        "import json, sys, numpy as np, train\n"
        "from pathlib import Path\n"
        "from app.model import DemandModel\n"
        "model = DemandModel.load(Path(sys.argv[1]))\n"
        "p = train.load_params({})\n"
        "raw, y = train.generate(p['seed'], p['rows'], p['noise'])\n"
        "order = np.random.default_rng(p['seed'] + 1).permutation(len(y))\n"
        "test = order[: round(len(y) * p['test_size'])]\n"
        "rows = [dict(zip(train.FEATURES, r)) for r in raw[test].tolist()]\n"
        "served = np.array(model.predict_many(rows))\n"
        "print(json.dumps({'rmse': float(np.sqrt(np.mean((served - y[test]) ** 2))),\n"
        "                  'smoke': model.predict_one(json.loads(sys.argv[2])['features'])}))\n"
    )
    res = subprocess.run([sys.executable, "-c", script, str(coef_file),
                          json.dumps(conf.smoke.payload)], cwd=BIKES, capture_output=True,
                         text=True, timeout=60, env=_env())
    assert res.returncode == 0, res.stderr
    served = json.loads(res.stdout)
    assert served["rmse"] == pytest.approx(metrics["rmse"], abs=1e-2)  # predictions rounded to 3 places
    assert served["smoke"] > 0


def test_the_knob_makes_a_model_the_gate_rejects(tmp_path: Path) -> None:
    conf = cfg.load(BIKES / "ci.toml", {}, BIKES)
    assert conf.model is not None
    worse = _train(tmp_path, {"features": 1})
    assert worse["rmse"] > (conf.model.thresholds["rmse"].threshold or 0) * 2


def test_config_differs_from_wine_where_it_should() -> None:
    conf = cfg.load(BIKES / "ci.toml", {}, BIKES)
    assert conf.project.platforms == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    assert expand_base(conf.build.base_image or "", parse("linux/arm/v7")) == \
        "maci/python:bookworm-armhf"
    assert conf.model is not None and conf.model.container is not None
    assert conf.model.container.target == "train"
    assert conf.model.artifact.describe() == "run:model/coef.npy"
    assert conf.model.check_command == ["python3", "-m", "app.check"]
    assert conf.deploy is not None
    assert conf.deploy.manifests == ["deploy/kustomization.yaml", "deploy/deployment.yaml"]
    for name in conf.deploy.manifests:
        assert "kind: Rollout" not in (BIKES / name).read_text()
    assert "kind: Deployment" in (BIKES / "deploy" / "deployment.yaml").read_text()


@pytest.mark.slow
def test_train_stage_trains_with_debian_numpy(tmp_path: Path) -> None:
    """`docker buildx build --target train` (amd64) and train.py in it, as `[model.container]`
    runs it: the project read-only at /src, /out writable."""
    docker = require_tool("docker")
    base = "maci/python:bookworm-amd64"
    ok = subprocess.run([docker, "image", "inspect", base], capture_output=True)
    require(ok.returncode == 0, f"base image {base} missing (run scripts/setup-stack.sh)")
    tag = f"maci-it/bikes-train:{os.getpid()}"
    build = subprocess.run([docker, "buildx", "build", "--load", "--platform", "linux/amd64",
                            "--build-arg", f"BASE={base}", "--target", "train", "-t", tag,
                            str(BIKES)], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    out = tmp_path / "out"
    out.mkdir()
    try:
        res = subprocess.run(
            [docker, "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}",
             "--mount", f"type=bind,src={BIKES},dst=/src,readonly",
             "--mount", f"type=bind,src={out},dst=/out", "--workdir", "/src",
             "--env", "MACI_OUTPUT_DIR=/out", "--env", "PYTHONDONTWRITEBYTECODE=1",
             tag, "python3", "train.py"], capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
    assert res.returncode == 0, res.stderr
    params = json.loads((out / "params.json").read_text())
    assert params["numpy_version"].startswith("1.")  # Debian bookworm's python3-numpy
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rmse"] < 18.0


@pytest.mark.slow
def test_ci_train_json_stays_json_with_a_tracking_server(docker_stack: None, mlflow_server: Any,
                                                        tmp_path: Path) -> None:
    """`ci train --json > gate.json` (the README's matrix) with an HTTP tracking server and a
    script that leaves its outputs to the library: MLflow's client prints "🏃 View run … at:"
    to stdout when the library ends a run on a REST store; that must not reach our stdout."""
    project = tmp_path / "bikes"
    shutil.copytree(BIKES, project, ignore=shutil.ignore_patterns(".maci", "model", "out",
                                                                  "__pycache__"))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "bikes"]):
        subprocess.run(["git", "-C", str(project), *args], check=True)
    res = subprocess.run(
        [sys.executable, "-m", "ci", "train", "--json"], cwd=project, capture_output=True,
        text=True, timeout=900,
        env=_env(MACI_MLFLOW__TRACKING_URI=mlflow_server.uri,
                 MACI_MODEL__REGISTERED_MODEL=f"bikes-json-{os.getpid()}"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "View run" not in res.stdout, res.stdout[:300]
    gate = json.loads(res.stdout)
    assert gate["ok"] is True and gate["version"] == "1"
