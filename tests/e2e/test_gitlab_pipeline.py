"""The shipped GitLab template, included by a consumer project, run for real by gitlab-ci-local.

A consumer repository (a copy of examples/wine with its own image, MLflow server and deploy
remote) includes templates/gitlab/release.gitlab-ci.yml with inputs; gitlab-ci-local (shell
executor, one folder per job) runs plan → train → one leg per platform → publish → deploy →
promote against the real registry, MLflow server, Docker + qemu and a bare git remote.

What gitlab-ci-local cannot emulate, and how this maps it:
- service containers (the `docker:dind` service): every job talks to the host's dockerd
  (`docker-host` input = its socket, DOCKER_TLS_VERIFY/DOCKER_CERT_PATH emptied);
- runner tags: ignored, so both legs run on this amd64 machine; the arm64 leg sees that the
  plan places it under qemu and registers the handler itself, as on an amd64-only runner;
- job images: `--force-shell-executor` runs the jobs on the host; `package: none` uses the `ci`
  under test from PATH (the template's default install, from maci-project@maci-ref, is run by
  test_default_install_resolves_the_template_source below);
- the cache: not shared (jobs run in their own folders).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.procs import require
from tests.fixtures.registry import Registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "templates" / "gitlab" / "release.gitlab-ci.yml"
WINE = ROOT / "examples" / "wine"
EXAMPLE_IMAGE = "127.0.0.1:5000/examples/wine"
# CI variables of the machine running the suite must not leak into the pipeline's jobs.
CI_VARS = ("GITHUB_ACTIONS", "GITLAB_CI", "CI_COMMIT_SHA", "CI_PIPELINE_ID", "MACI_RUN_ID")


def gitlab_ci_local() -> str:
    exe = shutil.which("gitlab-ci-local") or str(Path(sys.executable).parent / "gitlab-ci-local")
    require(Path(exe).is_file(), "gitlab-ci-local missing (run scripts/install-gitlab-ci-local.sh)")
    require(shutil.which("rsync") is not None, "rsync missing (gitlab-ci-local copies with it)")
    return exe


@dataclass
class Pipeline:
    returncode: int
    output: str
    seconds: float
    jobs: dict[str, str]  # job name -> "passed" | "failed" | "never ran"

    def artifacts(self, consumer: Path, job: str) -> Path:
        return consumer / ".gitlab-ci-local" / "artifacts" / job


@dataclass
class Consumer:
    root: Path
    image: str
    repo: str
    deploy: Path
    mlflow: MlflowServer
    registry: Registry
    env: dict[str, str]

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), *args], capture_output=True,
                              text=True, check=True).stdout.strip()

    def run(self, *variables: str) -> Pipeline:
        argv = [gitlab_ci_local(), "--force-shell-executor",
                "--shell-isolation", "--no-color", "--concurrency", "2",
                "--variable", "DOCKER_TLS_VERIFY=", "--variable", "DOCKER_CERT_PATH="]
        for v in variables:
            argv += ["--variable", v]
        started = time.monotonic()
        res = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=1500,
                             cwd=self.root, check=False)
        out = res.stdout + res.stderr
        log = self.root.parent / f"pipeline-{int(started)}.log"
        log.write_text(out)
        return Pipeline(res.returncode, out, time.monotonic() - started, job_states(out))


def job_states(output: str) -> dict[str, str]:
    """gitlab-ci-local's closing summary: `PASS  job` / `FAIL  job` lines."""
    states: dict[str, str] = {}
    for line in output.splitlines():
        m = re.match(r"^\s*(PASS|FAIL|WARN)\s+(\S.*?)\s*$", line)
        if m:
            states[m.group(2)] = {"PASS": "passed", "FAIL": "failed", "WARN": "warned"}[m.group(1)]
    return states


def _consumer_ci_yml(image: str, tracking: str) -> str:
    return f"""# A consumer project: the multiarch-ci template vendored under .gitlab/ and included
include:
  - local: .gitlab/multiarch-ci.yml
    inputs:
      config: ci.toml
      image: {image}
      registry: ""
      package: none
      tracking-uri: {tracking}
      docker-host: unix:///var/run/docker.sock
      amd64-runner-tag: amd64
      arm64-runner-tag: arm64

# Runners that bring their own Docker daemon (shell runners, a mounted socket): no dind service.
.maci-docker:
  services: []
"""


@pytest.fixture(scope="module")
def consumer(docker_stack: None, registry: Registry, mlflow_server: MlflowServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Consumer]:
    gitlab_ci_local()
    token = secrets.token_hex(3)
    repo = f"e2e/gitlab-{token}"
    image = f"{registry.host}/{repo}"
    base = tmp_path_factory.mktemp("gitlab")
    root = base / "service"
    shutil.copytree(WINE, root, ignore=shutil.ignore_patterns(".maci", "model", "__pycache__"))
    deploy = base / "deploy.git"
    toml = (root / "ci.toml").read_text()
    toml = toml.replace(EXAMPLE_IMAGE, image).replace('remote = ".maci/deploy.git"',
                                                      f'remote = "{deploy}"')
    toml = toml.replace('registered_model = "wine-classifier"',
                        f'registered_model = "wine-gitlab-{token}"')
    toml = toml.replace('experiment = "wine"', f'experiment = "wine-gitlab-{token}"')
    (root / "ci.toml").write_text(toml)
    for manifest in (root / "k8s").glob("*.yaml"):
        manifest.write_text(manifest.read_text().replace(EXAMPLE_IMAGE, image))
    (root / ".gitlab").mkdir()
    shutil.copy(TEMPLATE, root / ".gitlab" / "multiarch-ci.yml")
    (root / ".gitlab-ci.yml").write_text(_consumer_ci_yml(image, mlflow_server.uri))
    (root / ".gitignore").write_text(".maci/\n.gitlab-ci-local/\n")
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    c = Consumer(root, image, repo, deploy, mlflow_server, registry, env)
    c.git("init", "-q", "-b", "main")
    c.git("add", "-A")
    c.git("-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "service")
    yield c


@pytest.fixture(scope="module")
def released(consumer: Consumer) -> Pipeline:
    return consumer.run()


def test_the_pipeline_releases_end_to_end(consumer: Consumer, released: Pipeline) -> None:
    assert released.returncode == 0, released.output[-6000:]
    for job in ("maci-plan", "maci-train", "maci-build: [linux/amd64,amd64]",
                "maci-build: [linux/arm64,arm64]", "maci-publish", "maci-deploy", "maci-promote"):
        assert released.jobs.get(job) == "passed", (job, released.jobs)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())
