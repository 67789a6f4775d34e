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

import hashlib
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
from tests.fixtures.procs import require, require_tool
from tests.fixtures.registry import INDEX_TYPES, Registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "templates" / "gitlab" / "release.gitlab-ci.yml"
WINE = ROOT / "examples" / "wine"
EXAMPLE_IMAGE = "127.0.0.1:5000/examples/wine"
# CI variables of the machine running the suite must not leak into the pipeline's jobs.
CI_VARS = ("GITHUB_ACTIONS", "GITLAB_CI", "CI_COMMIT_SHA", "CI_PIPELINE_ID", "MACI_RUN_ID")
COSIGN_PASSWORD = "gitlab-" + secrets.token_hex(8)  # a masked CI variable: never in a job log


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
    model: str
    keys: Path  # cosign.key / cosign.pub: the template signs by default (input sign: key)

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.root), *args], capture_output=True,
                              text=True, check=True).stdout.strip()

    def run(self, *variables: str, jobs: tuple[str, ...] = (), file: str = "") -> Pipeline:
        argv = [gitlab_ci_local(), *jobs, *(["--file", file] if file else []),
                "--force-shell-executor",
                "--shell-isolation", "--no-color", "--concurrency", "2",
                "--variable", "DOCKER_TLS_VERIFY=", "--variable", "DOCKER_CERT_PATH="]
        for v in (f"COSIGN_PRIVATE_KEY={self.keys / 'cosign.key'}",
                  f"COSIGN_PUBLIC_KEY={self.keys / 'cosign.pub'}",
                  f"COSIGN_PASSWORD={COSIGN_PASSWORD}", *variables):
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
    keys = base / "keys"
    keys.mkdir()
    subprocess.run([require_tool("cosign"), "generate-key-pair", "--output-key-prefix",
                    str(keys / "cosign")], env={**env, "COSIGN_PASSWORD": COSIGN_PASSWORD},
                   check=True, capture_output=True, timeout=60)
    c = Consumer(root, image, repo, deploy, mlflow_server, registry, env, f"wine-gitlab-{token}",
                 keys)
    c.git("init", "-q", "-b", "main")
    c.git("add", "-A")
    c.git("-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m", "service")
    yield c


@dataclass(frozen=True)
class World:
    """Everything user-visible a release can move: tags, deploy head, the model alias."""

    tags: dict[str, str]
    deploy_head: str
    champion: str | None


def tag_digests(registry: Registry, repo: str) -> dict[str, str]:
    out = {}
    for tag in registry.tags(repo):  # release tags (indexes) and cosign's sha256-….sig
        status, body = registry.get(f"/v2/{repo}/manifests/{tag}", ", ".join(
            [*INDEX_TYPES, "application/vnd.oci.image.manifest.v1+json"]))
        assert status == 200, body
        out[tag] = "sha256:" + hashlib.sha256(body).hexdigest()
    return out


def world(c: Consumer) -> World:
    head = subprocess.run(["git", "--git-dir", str(c.deploy), "rev-parse", "refs/heads/main"],
                          capture_output=True, text=True, check=False).stdout.strip()
    return World(tag_digests(c.registry, c.repo), head, champion(c))


def champion(c: Consumer) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=c.mlflow.uri, registry_uri=c.mlflow.uri)
    try:
        return str(client.get_model_version_by_alias(c.model, "champion").version)
    except MlflowException:
        return None


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


BUILDS = {"linux/amd64": "maci-buildOiBblinuxLwamd64LAamd64XQ",
          "linux/arm64": "maci-buildOiBblinuxLwarm64LAarm64XQ"}


def test_the_index_is_signed_before_its_tags_and_verified_before_the_deploy(
        consumer: Consumer, released: Pipeline) -> None:
    """Signing is on by default: the published index verifies with the project's public key,
    its signature names the released commit, and the password never shows in a job log."""
    digest = _json(consumer.root / ".gitlab-ci-local" / "artifacts" / "maci-publish" /
                   "merge.json")["publish"]["digest"]
    res = subprocess.run([require_tool("cosign"), "verify", "--key", str(consumer.keys / "cosign.pub"),
                          "--insecure-ignore-tlog=true", "--allow-http-registry",
                          f"{consumer.image}@{digest}"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    notes = json.loads(res.stdout)[0]["optional"]
    assert notes["dev.maci.source.sha"] == consumer.git("rev-parse", "HEAD")
    assert COSIGN_PASSWORD not in released.output
    assert f"sha256-{digest[7:]}.sig" in consumer.registry.tags(consumer.repo)


def test_each_job_hands_on_its_artifacts(consumer: Consumer, released: Pipeline) -> None:
    art = consumer.root / ".gitlab-ci-local" / "artifacts"
    plan = _json(art / "maci-plan" / "plan.json")
    assert plan["training"] and plan["deploy"]
    assert {j["platform"]: j["placement"]["kind"] for j in plan["jobs"]} == {
        "linux/amd64": "native", "linux/arm64": "emulated"}
    dotenv = (art / "maci-train" / ".gitlab-ci-reports" / "dotenv" / "maci-train.env").read_text()
    gate = _json(art / "maci-train" / "gate.json")
    assert gate["ok"] and dotenv == f"MODEL_VERSION={gate['version']}\n"
    metrics = (art / "maci-train" / "metrics.txt").read_text().split()
    assert "accuracy" in metrics and float(metrics[metrics.index("accuracy") + 1]) >= 0.85
    for platform, job in BUILDS.items():
        slug = platform.replace("/", "-")
        result = _json(art / job / f"result-{slug}.json")
        assert result["status"] == "passed" and result["tests"]["passed"] == 29, result
        # the leg's own smoke test ran on the digest the merge published
        assert result["smoke"]["passed"] and result["smoke"]["reference"].endswith(result["digest"])
        junit = (art / job / f"junit-{slug}.xml").read_text()
        assert "<testcase" in junit and 'failures="0"' in junit
    merge = _json(art / "maci-publish" / "merge.json")
    published = merge["publish"]
    assert sorted(published["platforms"]) == ["linux/amd64", "linux/arm64"]
    publish_env = art / "maci-publish" / ".gitlab-ci-reports" / "dotenv" / "maci-publish.env"
    assert publish_env.read_text().strip() == f"INDEX_DIGEST={published['digest']}"


def test_the_release_is_visible_where_users_look(consumer: Consumer, released: Pipeline) -> None:
    art = consumer.root / ".gitlab-ci-local" / "artifacts"
    published = _json(art / "maci-publish" / "merge.json")["publish"]
    digest = published["digest"]
    tags = tag_digests(consumer.registry, consumer.repo)
    sha = consumer.git("rev-parse", "HEAD")
    assert tags[f"sha-{sha[:7]}"] == digest and tags["main"] == digest, tags
    assert set(tags) == {f"sha-{sha[:7]}", "main", "latest", f"sha256-{digest[7:]}.sig"}, tags
    status, body = consumer.registry.get(f"/v2/{consumer.repo}/manifests/{digest}",
                                         ", ".join(INDEX_TYPES))
    assert status == 200
    archs = sorted(m["platform"]["architecture"] for m in json.loads(body)["manifests"]
                   if m.get("platform", {}).get("os") == "linux")
    assert archs == ["amd64", "arm64"]
    deployed = _json(art / "maci-deploy" / "deploy.json")
    log = subprocess.run(["git", "--git-dir", str(consumer.deploy), "log", "-1", "--format=%H %s",
                          "refs/heads/main"], capture_output=True, text=True, check=True).stdout
    assert log.split()[0] == deployed["commit"] and digest[7:19] in log, log
    kustomization = subprocess.run(
        ["git", "--git-dir", str(consumer.deploy), "show", "refs/heads/main:k8s/kustomization.yaml"],
        capture_output=True, text=True, check=True).stdout
    assert digest in kustomization
    gate = _json(art / "maci-train" / "gate.json")
    assert champion(consumer) == str(gate["version"])


def test_a_worse_model_stops_the_pipeline_at_train(consumer: Consumer, released: Pipeline) -> None:
    before = world(consumer)
    worse = json.dumps({"C": 1.0, "max_iter": 500, "seed": 7, "features": 2})
    res = consumer.run(f"MACI_MODEL__PARAMS={worse}")
    assert res.returncode != 0
    assert res.jobs.get("maci-train") == "failed", res.jobs
    for job in ("maci-publish", "maci-deploy", "maci-promote", *(
            f"maci-build: [{p},{p.split('/')[1]}]" for p in BUILDS)):
        assert res.jobs.get(job) is None, (job, res.jobs)  # never started
    gate = _json(consumer.root / ".gitlab-ci-local" / "artifacts" / "maci-train" / "gate.json")
    assert not gate["ok"] and gate["version"] is None
    assert world(consumer) == before


def test_one_failing_leg_publishes_nothing(consumer: Consumer, released: Pipeline) -> None:
    before = world(consumer)
    (consumer.root / "tests" / "test_arch_guard.py").write_text(
        "import platform\n\n\ndef test_not_on_arm() -> None:\n"
        "    assert platform.machine() != 'aarch64', 'fails on arm64 only'\n")
    consumer.git("add", "-A")
    consumer.git("-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-q", "-m",
                 "a test that fails on arm64")
    res = consumer.run()
    assert res.returncode != 0
    assert res.jobs.get("maci-build: [linux/amd64,amd64]") == "passed", res.jobs
    assert res.jobs.get("maci-build: [linux/arm64,arm64]") == "failed", res.jobs
    for job in ("maci-publish", "maci-deploy", "maci-promote"):
        assert res.jobs.get(job) is None, (job, res.jobs)
    arm = _json(consumer.root / ".gitlab-ci-local" / "artifacts" / BUILDS["linux/arm64"] /
                "result-linux-arm64.json")
    assert arm["status"] == "failed" and arm["tests"]["failed"] == 1, arm
    assert "fails on arm64 only" in res.output
    assert world(consumer) == before
    sha = consumer.git("rev-parse", "HEAD")
    assert f"sha-{sha[:7]}" not in before.tags


def test_an_image_the_manifests_do_not_name_is_refused_by_the_plan(consumer: Consumer,
                                                                  released: Pipeline) -> None:
    res = consumer.run(f"MACI_IMAGE={consumer.registry.host}/someone/else", jobs=("maci-plan",))
    assert res.returncode != 0 and res.jobs.get("maci-plan") == "failed", res.jobs
    assert "project.image: none of k8s/kustomization.yaml" in res.output


def test_the_default_install_is_the_template_source(consumer: Consumer,
                                                    tmp_path: Path) -> None:
    """No `package` input: the job installs multiarch-ci from maci-project at maci-ref on this
    GitLab (a bare clone of this repository at its HEAD, as `include: project` would name it),
    with its declared dependencies from PyPI, into the job's own venv, and runs `ci plan`."""
    server = tmp_path / "gitlab"
    source = server / "tools" / "multiarch-ci.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(source)], check=True)
    ref = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    yml = _consumer_ci_yml(consumer.image, consumer.mlflow.uri).replace(
        "      package: none\n",
        f"      maci-project: tools/multiarch-ci\n      maci-ref: {ref}\n")
    (consumer.root / ".gitlab-ci-install.yml").write_text(yml)
    res = consumer.run(f"CI_SERVER_URL=file://{server}",
                       f"PIP_CACHE_DIR={tmp_path.parent / 'pip-cache'}",
                       jobs=("maci-plan",), file=".gitlab-ci-install.yml")
    assert res.returncode == 0 and res.jobs.get("maci-plan") == "passed", res.output[-4000:]
    # what the job installed, and the ci it then ran (its venv is gone with the job's folder)
    assert f"installed git+file://{server}/tools/multiarch-ci.git@{ref}" in res.output
    assert re.search(r"multiarch-ci \S+ at \S+/\.maci-venv/bin/ci", res.output), res.output[-3000:]
    assert _json(consumer.root / ".gitlab-ci-local" / "artifacts" / "maci-plan" / "plan.json")["jobs"]
