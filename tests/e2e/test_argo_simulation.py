"""The exported Argo WorkflowTemplate, run step by step on this machine (issue #17).

A consumer repository (a copy of examples/wine with its own image, a real MLflow server, a bare
deploy remote and a cosign key pair) is exported with `ci export argo` for a cluster that has
only amd64 nodes, so its arm64 job is placed `emulated` and gets the `ci setup-qemu` init
container. tests/argo_sim.py then runs every step's own script in DAG order, passing the
artifacts as files and the Secrets as env, against the real registry, MLflow, Docker + qemu and
git: the release it makes is the one `ci run` makes (tags on the signed index, the deploy
commit pinning it, the MLflow alias). How a pod maps onto this machine: see tests/argo_sim.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.argo_sim import Simulation, StepFailed
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.procs import require_tool
from tests.fixtures.registry import INDEX_TYPES, Registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
WINE = ROOT / "examples" / "wine"
EXAMPLE_IMAGE = "127.0.0.1:5000/examples/wine"
CI_VARS = ("GITHUB_ACTIONS", "GITLAB_CI", "CI_COMMIT_SHA", "CI_PIPELINE_ID", "MACI_RUN_ID",
           "DOCKER_HOST", "MACI_SOURCE_REF")
COSIGN_PASSWORD = "argo-" + secrets.token_hex(8)


@dataclass
class Consumer:
    root: Path
    image: str
    repo: str
    deploy: Path
    registry: Registry
    mlflow: MlflowServer
    model: str
    env: dict[str, str]
    keys: Path

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), *args], capture_output=True,
                              text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def consumer(docker_stack: None, registry: Registry, mlflow_server: MlflowServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consumer]:
    token = secrets.token_hex(3)
    repo = f"e2e/argo-{token}"
    image = f"{registry.host}/{repo}"
    base = tmp_path_factory.mktemp("argo")
    root = base / "service"
    shutil.copytree(WINE, root, ignore=shutil.ignore_patterns(".maci", "model", "__pycache__"))
    deploy = base / "deploy.git"
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    subprocess.run([require_tool("cosign"), "generate-key-pair", "--output-key-prefix",
                    str(base / "cosign")], env={**env, "COSIGN_PASSWORD": COSIGN_PASSWORD},
                   check=True, capture_output=True, timeout=60)
    shutil.copy(base / "cosign.pub", root / "cosign.pub")  # committed; the key is a Secret
    toml = (root / "ci.toml").read_text().replace(EXAMPLE_IMAGE, image)
    toml = toml.replace('remote = ".maci/deploy.git"', f'remote = "{deploy}"')
    toml = toml.replace('registered_model = "wine-classifier"', f'registered_model = "wine-argo-{token}"')
    toml = toml.replace('experiment = "wine"', f'experiment = "wine-argo-{token}"')
    toml += (f'\n[mlflow]\ntracking_uri = "{mlflow_server.uri}"\n\n[sign]\npublic_key = "cosign.pub"\n'
             '\n[argo]\nnamespace = "ci"\n')
    (root / "ci.toml").write_text(toml)
    for manifest in (root / "k8s").glob("*.yaml"):
        manifest.write_text(manifest.read_text().replace(EXAMPLE_IMAGE, image))
    (root / ".gitignore").write_text(".maci/\n")
    c = Consumer(root, image, repo, deploy, registry, mlflow_server, f"wine-argo-{token}", env, base)
    c.git("init", "-q", "-b", "main")
    c.git("add", "-A")
    c.git("-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "service")
    yield c


def export(c: Consumer, out: Path) -> dict[str, Any]:
    """The real CLI, for a cluster with amd64 nodes only (arm64 is emulated on them)."""
    res = subprocess.run(["ci", "export", "argo", "--config", str(c.root / "ci.toml"),
                          "--ci-image", "ghcr.io/example/multiarch-ci:sim", "--output", str(out)],
                         env={**c.env, "MACI_ARGO__NODE_PLATFORMS": "linux/amd64"},
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 0, res.stderr
    return dict(YAML(typ="safe", pure=True).load((out / "workflow-template.yaml").read_text()))


def registered() -> frozenset[str]:
    from ci.adapters import binfmt

    return frozenset(str(h.platform) for h in binfmt.handlers() if h.usable_in_containers and h.platform)


@dataclass
class Run:
    sim: Simulation
    seconds: float
    error: StepFailed | None


@pytest.fixture(scope="module")
def released(consumer: Consumer, tmp_path_factory: pytest.TempPathFactory) -> Run:
    import time

    work = tmp_path_factory.mktemp("argo-run")
    template = export(consumer, work / "exported")
    sim = Simulation(
        template,
        {"repo": str(consumer.root), "revision": consumer.git("rev-parse", "HEAD"),
         "ref": "refs/heads/main"},
        {("maci-cosign", "cosign.key"): (consumer.keys / "cosign.key").read_text(),
         ("maci-cosign", "password"): COSIGN_PASSWORD},
        work / "steps", consumer.env, registered=registered(), name="wine-release-x7k2p")
    started = time.monotonic()
    try:
        sim.run()
        error = None
    except StepFailed as exc:
        error = exc
    return Run(sim, round(time.monotonic() - started, 1), error)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_the_workflow_runs_every_step_in_dag_order(released: Run) -> None:
    assert released.error is None, str(released.error)
    order = list(released.sim.nodes)
    assert order[:2] == ["plan", "train"]
    assert set(order[2:4]) == {"job-linux-amd64", "job-linux-arm64"}
    assert order[4:] == ["merge", "smoke/canary", "smoke/stress", "smoke", "deploy", "promote"]
    times = {n: node.seconds for n, node in released.sim.nodes.items()}
    print(f"argo simulation: {released.seconds} s; steps {times}")  # ~80 s here, 2 cores


def test_qemu_is_registered_only_for_the_emulated_job(released: Run) -> None:
    nodes = released.sim.nodes
    # registered here already (the kernel is shared): the init container had nothing to do
    assert nodes["job-linux-arm64"].skipped_init == ["setup-qemu"]
    assert nodes["job-linux-amd64"].skipped_init == []
    arm = _json(nodes["job-linux-arm64"].artifacts["result"])
    amd = _json(nodes["job-linux-amd64"].artifacts["result"])
    assert (arm["placement"], amd["placement"]) == ("emulated", "native")
    assert arm["status"] == amd["status"] == "passed"
    assert arm["run_id"] == amd["run_id"] == "wine-release-x7k2p"  # {{workflow.name}}
    assert arm["smoke"]["passed"] and amd["smoke"]["passed"]


def test_the_release_is_the_one_ci_run_makes(consumer: Consumer, released: Run) -> None:
    from mlflow import MlflowClient

    nodes = released.sim.nodes
    merge = _json(nodes["merge"].artifacts["merge"])["publish"]
    digest = merge["digest"]
    assert nodes["merge"].parameters["index-digest"] == digest
    sha = consumer.git("rev-parse", "HEAD")
    tags = {}
    for tag in consumer.registry.tags(consumer.repo):
        status, body = consumer.registry.get(f"/v2/{consumer.repo}/manifests/{tag}", ", ".join(
            [*INDEX_TYPES, "application/vnd.oci.image.manifest.v1+json"]))
        assert status == 200
        import hashlib

        tags[tag] = "sha256:" + hashlib.sha256(body).hexdigest()
    assert set(tags) == {f"sha-{sha[:7]}", "main", "latest", f"sha256-{digest[7:]}.sig"}, tags
    assert tags["main"] == tags["latest"] == tags[f"sha-{sha[:7]}"] == digest
    status, body = consumer.registry.get(f"/v2/{consumer.repo}/manifests/{digest}", ", ".join(INDEX_TYPES))
    archs = sorted(m["platform"]["architecture"] for m in json.loads(body)["manifests"]
                   if m.get("platform", {}).get("os") == "linux")
    assert archs == ["amd64", "arm64"]
    # the deploy commit pins the index, and it is what the deploy step reported
    deployed = _json(nodes["deploy"].artifacts["deploy"])
    head = subprocess.run(["git", "--git-dir", str(consumer.deploy), "rev-parse", "refs/heads/main"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert head == deployed["commit"] == nodes["deploy"].parameters["deploy-commit"]
    kustomization = subprocess.run(
        ["git", "--git-dir", str(consumer.deploy), "show", "refs/heads/main:k8s/kustomization.yaml"],
        capture_output=True, text=True, check=True).stdout
    assert digest in kustomization
    guard = json.loads(subprocess.run(
        ["git", "--git-dir", str(consumer.deploy), "show", "refs/heads/main:.maci/deployed.json"],
        capture_output=True, text=True, check=True).stdout)
    assert guard["source_sha"] == sha and guard["source_ref"] == "refs/heads/main"
    # the alias moved to the version the gate passed, after the deploy
    gate = _json(nodes["train"].artifacts["gate"])
    client = MlflowClient(tracking_uri=consumer.mlflow.uri, registry_uri=consumer.mlflow.uri)
    assert gate["ok"] and str(client.get_model_version_by_alias(consumer.model, "champion").version) \
        == str(gate["version"]) == nodes["train"].parameters["model-version"]
    # the in-cluster stress test loaded the published index as the canary served it
    smoke = _json(nodes["smoke/stress"].artifacts["smoke"])
    assert smoke["passed"] and smoke["reference"] == f"{consumer.image}@{digest}"
    assert smoke["requests"] == 40 and smoke["errors"] == 0


def test_the_signature_came_from_the_secret_and_never_shows(consumer: Consumer,
                                                            released: Run) -> None:
    digest = _json(released.sim.nodes["merge"].artifacts["merge"])["publish"]["digest"]
    res = subprocess.run([require_tool("cosign"), "verify", "--key", str(consumer.root / "cosign.pub"),
                          "--insecure-ignore-tlog=true", "--allow-http-registry",
                          f"{consumer.image}@{digest}"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    logs = "".join((n.folder / "log.txt").read_text() for n in released.sim.nodes.values()
                   if (n.folder / "log.txt").is_file())
    assert COSIGN_PASSWORD not in logs
    for n in released.sim.nodes.values():  # no step left the key anywhere but its own tmp
        script = n.folder / "script.sh"
        if script.is_file():
            assert "BEGIN ENCRYPTED" not in script.read_text()
