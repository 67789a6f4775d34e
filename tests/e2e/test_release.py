"""The release pipeline on the real stack: every fault leaves the world as it was.

One copy of examples/wine is released once (module fixture); each fault test then runs
`ci run` as a user would and proves that no tag, index, deploy commit or MLflow alias
changed, that the message says why, and that the exit code is 1 (130 for SIGINT).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.registry import TAG_PUT, FaultProxy, Registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = Path(__file__).parents[2] / "examples" / "wine"
INDEX_ACCEPT = (
    "application/vnd.oci.image.index.v1+json,"
    "application/vnd.docker.distribution.manifest.list.v2+json"
)
GIT = ["git", "-c", "user.name=maci test", "-c", "user.email=test@maci.invalid"]
WORSE_MODEL = '{"C": 1.0, "max_iter": 500, "seed": 7, "features": 2}'


@dataclass
class Project:
    path: Path
    repo: str
    registry: Registry
    proxy: FaultProxy

    @property
    def image(self) -> str:
        return f"{self.proxy.host}/{self.repo}"

    @property
    def deploy_remote(self) -> Path:
        return self.path / ".maci" / "deploy.git"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MACI_", "GITHUB_", "GITLAB_", "MLFLOW_"))
               and k not in {"CI_COMMIT_SHA", "GITLAB_CI"}}
        env["MACI_PROJECT__IMAGE"] = self.image
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def run(self, *args: str, timeout: float = 900, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ci", "run", "release", "--json", *args],
            cwd=self.path, env=self.env(**extra), capture_output=True, text=True,
            timeout=timeout, check=False,
        )

    def commit(self, message: str) -> str:
        subprocess.run([*GIT, "-C", str(self.path), "commit", "-q", "--allow-empty", "-m", message],
                       check=True)
        return head(self.path)

    def world(self) -> dict[str, Any]:
        """Everything a user sees: release tags → digests, indexes, deploy head, alias."""
        tags = {t: tag_digest(self.registry, self.repo, t) for t in self.registry.tags(self.repo)}
        return {
            "tags": tags,
            "indexes": sorted(m["digest"] for m in self.registry.indexes(self.repo)),
            "deploy_head": head(self.deploy_remote) if self.deploy_remote.exists() else None,
            "alias": alias(self.path / ".maci" / "mlflow.db"),
        }


def head(repo: Path, ref: str = "HEAD") -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", ref], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def tag_digest(registry: Registry, repo: str, tag: str) -> str:
    status, body = registry.get(f"/v2/{repo}/manifests/{tag}", accept=INDEX_ACCEPT)
    assert status == 200, body
    return "sha256:" + hashlib.sha256(body).hexdigest()


def alias(db: Path, name: str = "wine-classifier", alias_name: str = "champion") -> str | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
            (name, alias_name),
        ).fetchone()
    return str(row[0]) if row else None


def outcome(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        return json.loads(proc.stdout)  # type: ignore[no-any-return]
    except ValueError:
        raise AssertionError(f"no JSON on stdout\nstdout: {proc.stdout}\nstderr: {proc.stderr}") from None


def copy_example(dest: Path, image: str) -> Path:
    """The example in its own git repo, its manifests naming the test's image repository."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".maci", "model", "__pycache__"))
    for manifest in (dest / "k8s").glob("*.yaml"):
        manifest.write_text(manifest.read_text().replace("127.0.0.1:5000/examples/wine", image))
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(dest)], check=True)
    subprocess.run([*GIT, "-C", str(dest), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(dest), "commit", "-q", "-m", "wine"], check=True)
    return dest


@pytest.fixture(scope="module")
def released(docker_stack: None, registry: Registry, registry_proxy: FaultProxy,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """examples/wine copied, committed and released once (the world the faults must keep)."""
    registry_proxy.clear()
    path = copy_example(tmp_path_factory.mktemp("wine") / "wine", f"{registry_proxy.host}/e2e/wine")
    project = Project(path, "e2e/wine", registry, registry_proxy)
    proc = project.run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield project
    registry_proxy.clear()


def test_first_release_publishes_deploys_and_promotes(released: Project) -> None:
    world = released.world()
    data = json.loads((released.path / ".maci" / "verdict.json").read_text())
    assert data["passed"] is True
    assert {p["platform"]: p["placement"] for p in data["platforms"]} == {
        "linux/amd64": "native", "linux/arm64": "emulated"}
    assert {s["platform"] for s in data["smoke"]} == {"linux/amd64", "linux/arm64"}
    assert all(s["passed"] for s in data["smoke"])
    short = head(released.path)[:7]
    assert set(world["tags"]) == {f"sha-{short}", "main", "latest"}
    assert len(set(world["tags"].values())) == 1  # every tag → the one index
    index = next(iter(world["tags"].values()))
    assert world["indexes"] == [index]
    assert world["alias"] == "1"
    # the deploy commit pins the index digest and the model version
    log = subprocess.run(["git", "-C", str(released.deploy_remote), "log", "-1", "-p"],
                         capture_output=True, text=True, check=True).stdout
    assert index in log and head(released.path)[:12] in log
    show = subprocess.run(["git", "-C", str(released.deploy_remote), "show", "HEAD:k8s/kustomization.yaml"],
                          capture_output=True, text=True, check=True).stdout
    assert f"digest: {index}" in show
    # the published index really runs per platform
    for platform, machine in (("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")):
        ref = f"{released.image}@{index}"
        # the classic image store keeps one platform per reference: drop the other's first
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, check=False)
        out = subprocess.run(["docker", "run", "--rm", "--pull", "always", "--platform", platform,
                              "--entrypoint", "uname", ref, "-m"],
                             capture_output=True, text=True, timeout=300, check=False)
        assert out.stdout.strip() == machine, out.stderr


def test_unchanged_rerun_is_up_to_date_and_fast(released: Project) -> None:
    before = released.world()
    started = time.monotonic()
    proc = released.run()
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = outcome(proc)
    assert data["up_to_date"] is True
    assert data["release"]["index_digest"] in before["tags"].values()
    assert released.world() == before
    assert seconds < 15  # no build, no test, no push: answered from the release record



def test_dry_run_runs_every_gate_and_changes_nothing(released: Project) -> None:
    before = released.world()
    proc = released.run("--dry-run", MACI_SMOKE__REQUESTS="5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = outcome(proc)
    assert data["up_to_date"] is False and data["verdict"]["passed"] is True
    assert data["published"]["dry_run"] is True
    # nothing per run in images or index: the dry run of the released commit predicts exactly
    # the released index, so the deploy it would make changes nothing
    assert data["published"]["digest"] in before["tags"].values()
    assert data["deploy"]["dry_run"] is True and not data["deploy"]["changed_files"], data["deploy"]
    assert data["promoted"] is None
    assert released.world() == before


def assert_unchanged(project: Project, before: dict[str, Any], proc: subprocess.CompletedProcess[str],
                     *fragments: str) -> dict[str, Any]:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert project.world() == before
    err = proc.stderr
    for fragment in fragments:
        assert fragment in err or fragment in proc.stdout, (fragment, err[-3000:])
    return outcome(proc)


def test_worse_model_is_rejected_with_nothing_changed(released: Project) -> None:
    before = released.world()
    proc = released.run(MACI_MODEL__PARAMS=WORSE_MODEL)
    data = assert_unchanged(released, before, proc, "release rejected, nothing published",
                            "model gate")
    verdict = data["verdict"]
    assert verdict["passed"] is False
    assert verdict["model"]["passed"] is False
    assert verdict["model"]["champion_version"] == "1"
    assert verdict["model"]["deltas"]["accuracy"] < 0
    assert any("accuracy" in r for r in verdict["reasons"])


def test_tests_failing_only_on_arm64_publish_nothing(released: Project) -> None:
    before = released.world()
    released.commit("arm64-only failure")
    cmd = ('[ "$(uname -m)" != aarch64 ] && python3 -m pytest -q -p no:cacheprovider tests '
           "--junitxml=/tmp/maci-junit.xml")
    proc = released.run(MACI_TEST__COMMAND=json.dumps(["sh", "-c", cmd]))
    data = assert_unchanged(released, before, proc, "linux/arm64")
    by = {p["platform"]: p for p in data["verdict"]["platforms"]}
    assert by["linux/arm64"]["status"] == "failed"
    amd = by["linux/amd64"]  # passed, or cancelled by fail-fast when arm64 failed first
    assert amd["status"] == "passed" or amd["failure"]["message"] == \
        "cancelled: linux/arm64 failed first", amd
    assert data["verdict"]["reasons"][0].startswith("linux/arm64")  # the cause comes first
    # the console names the failing command and its exit code, like `docker run` would
    assert "$ sh -c" in proc.stderr and "exited 1" in proc.stderr, proc.stderr[-2000:]
    failure = by["linux/arm64"]["failure"]
    assert failure["command"][:2] == ["sh", "-c"] and failure["exit_code"] == 1


def test_registry_failing_the_tag_write_moves_no_tag(released: Project) -> None:
    before = released.world()
    released.commit("registry fault")
    released.proxy.fail("PUT", TAG_PUT, status=500)
    try:
        proc = released.run()
    finally:
        released.proxy.reset()
    assert proc.returncode == 1, proc.stderr[-3000:]
    after = released.world()
    assert after["tags"] == before["tags"]  # rolled back: no release tag moved
    assert after["deploy_head"] == before["deploy_head"] and after["alias"] == before["alias"]
    assert "no tag moved" in proc.stderr or "nothing" in proc.stderr, proc.stderr[-2000:]
    assert outcome(proc)["published"] is None


def test_smoke_failure_is_a_failed_gate(released: Project) -> None:
    before = released.world()
    proc = released.run(MACI_SMOKE__P95_MS="0.001")
    data = assert_unchanged(released, before, proc, "smoke")
    smoke = {s["platform"]: s for s in data["verdict"]["smoke"]}
    assert smoke["linux/amd64"]["passed"] is False
    assert smoke["linux/amd64"]["bound_ms"] == 0.001
    assert smoke["linux/arm64"]["bound_ms"] == 3000  # emulated platforms have their own bound


def test_mlflow_down_fails_closed(released: Project) -> None:
    before = released.world()
    started = time.monotonic()
    proc = released.run(MACI_MLFLOW__TRACKING_URI="http://127.0.0.1:9")
    data = assert_unchanged(released, before, proc, "model stage")
    assert time.monotonic() - started < 60
    # tests may have run beside the model stage, but no release image was built or pushed
    assert all(p["digest"] is None for p in data["verdict"]["platforms"])
    assert any("MLflow" in r or "mlflow" in r or "127.0.0.1:9" in r
               for r in data["verdict"]["reasons"])


def test_deploy_push_rejected_once_then_lands(released: Project) -> None:
    hook = released.deploy_remote / "hooks" / "pre-receive"
    counter = released.deploy_remote / "rejections"
    hook.write_text(
        "#!/bin/sh\n"
        f'if [ ! -f "{counter}" ]; then echo 1 > "{counter}"; '
        'echo "deploy branch busy, try again" >&2; exit 1; fi\nexit 0\n'
    )
    hook.chmod(0o755)
    try:
        released.commit("deploy retry")
        proc = released.run()
    finally:
        hook.unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = outcome(proc)
    assert data["deploy"]["attempts"] == 2
    assert counter.exists()
    assert head(released.deploy_remote) == data["deploy"]["commit"]
    assert alias(released.path / ".maci" / "mlflow.db") == "1"  # same model version promoted


def test_sigint_during_a_build_exits_130_and_publishes_nothing(released: Project) -> None:
    before = released.world()
    released.commit("sigint")
    env = released.env(MACI_TEST__COMMAND='["sleep", "120"]')
    proc = subprocess.Popen([sys.executable, "-m", "ci", "run", "release"], cwd=released.path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if "test+build+push" in line and "started" in line:
            break
        if not line and proc.poll() is not None:
            break
    time.sleep(3)  # inside the platform jobs (image builds / the test container)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, seen + err
    assert "interrupted" in err
    assert released.world() == before
    left = subprocess.run(["docker", "ps", "-a", "--filter", "name=maci-", "--format", "{{.Names}}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert left == []


def test_matrix_leg_embeds_the_registered_model(released: Project, tmp_path: Path) -> None:
    """`ci job --model-version` (a CI matrix leg) builds the image with that exact version."""
    env = released.env()
    base = [sys.executable, "-m", "ci", "job", "--platform", "linux/amd64"]
    missing = subprocess.run([*base, "-o", str(tmp_path / "r0.json")], cwd=released.path, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 2 and "--model-version is required" in missing.stderr
    before = released.world()
    leg = subprocess.run([*base, "--model-version", "1", "-o", str(tmp_path / "r1.json")],
                         cwd=released.path, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert leg.returncode == 0, leg.stderr[-3000:]
    result = json.loads((tmp_path / "r1.json").read_text())
    assert result["status"] == "passed" and result["digest"].startswith("sha256:")
    assert released.world() == before  # a leg pushes by digest only: no tag, no index
    ref = f"{released.image}@{result['digest']}"
    subprocess.run(["docker", "pull", ref], capture_output=True, check=True, timeout=300)
    labels = json.loads(subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
        capture_output=True, text=True, check=True).stdout)
    assert labels["dev.maci.model.version"] == "1"
    assert labels["dev.maci.model.name"] == "wine-classifier"


def test_secrets_never_leak(docker_stack: None, registry: Registry, fault_proxy: FaultProxy,
                            mlflow_server: Any, tmp_path: Path) -> None:
    """A registry password and an MLflow token set for the run appear nowhere we write."""
    password = "reg-pa55-" + os.urandom(6).hex()
    token = "mlflow-tok-" + os.urandom(6).hex()
    path = copy_example(tmp_path / "wine", f"{fault_proxy.host}/e2e/wine-secret")
    project = Project(path, "e2e/wine-secret", registry, fault_proxy)
    with (project.path / "ci.toml").open("a") as f:
        f.write('\n[publish.auth]\nusername = "maci"\npassword_env = "E2E_REGISTRY_PASSWORD"\n')
    text = (project.path / "ci.toml").read_text()
    text = text.replace("[mlflow]\n", "")  # the example has no [mlflow] table; add ours
    (project.path / "ci.toml").write_text(
        text + f'\n[mlflow]\ntracking_uri = "{mlflow_server.uri}"\ntoken_env = "E2E_MLFLOW_TOKEN"\n')
    subprocess.run([*GIT, "-C", str(project.path), "commit", "-qam", "auth"], check=True)
    fault_proxy.basic = ("maci", password)
    proc = project.run(E2E_REGISTRY_PASSWORD=password, E2E_MLFLOW_TOKEN=token)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(status == 401 for _, _, status in fault_proxy.log)  # auth was really required
    assert outcome(proc)["published"]["digest"].startswith("sha256:")
    haystacks = {"stdout": proc.stdout, "stderr": proc.stderr}
    for path in (project.path / ".maci").rglob("*"):
        if path.is_file() and path.suffix != ".db":
            haystacks[str(path)] = path.read_text(errors="replace")
    log = subprocess.run(["git", "-C", str(project.deploy_remote), "log", "--all", "-p"],
                         capture_output=True, text=True, check=True).stdout
    haystacks["deploy log"] = log
    for name, text in haystacks.items():
        assert password not in text, name
        assert token not in text, name
    assert len(haystacks) > 5
