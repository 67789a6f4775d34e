"""examples/bikes on the real stack: three platforms (linux/arm/v7 and linux/arm64 under qemu),
training in a Dockerfile stage, a binary model artifact, a lower-is-better gate and a real
MLflow tracking server (the wine e2e keeps the embedded store).

One copy of the example is released once (module fixture). The failure scenarios then run
`ci` as a user would and prove through the registry API, git and the MLflow REST API that no
tag, index, deploy commit, alias or registered version changed; the matrix scenario runs the
README's local matrix commands (train → one `ci job` per platform → merge → deploy → promote).

Each scenario's wall time and every platform job's seconds (native vs emulated) are printed
(`-s`) and, with MACI_BIKES_TIMINGS=<file>, written there as JSON (for BENCHMARKS.md).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.procs import require
from tests.fixtures.registry import INDEX_TYPES, Registry
from tests.fixtures.sampleapp import remove_local_images

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bikes"
PLACEHOLDER = "127.0.0.1:5000/examples/bikes"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
PLACEMENTS = {"linux/amd64": "native", "linux/arm64": "emulated", "linux/arm/v7": "emulated"}
ARMHF_BASE = "maci/python:bookworm-armhf"
MODEL = "bikes-demand"
COEF_IN_IMAGE = "srv/model/coef.npy"
WORSE_MODEL = '{"seed": 7, "rows": 4000, "noise": 12.0, "test_size": 0.25, "features": 1}'
INDEX_ACCEPT = ", ".join(sorted(INDEX_TYPES))
MANIFEST_ACCEPT = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                             "application/vnd.docker.distribution.manifest.v2+json"])
GIT = ["git", "-c", "user.name=maci test", "-c", "user.email=test@maci.invalid"]
ARMV7_ONLY_TEST = '''"""Fails on 32-bit arm only: the arm/v7 leg (under qemu) must stop the release."""
import platform


def test_not_a_32_bit_arm_cpu():
    assert not platform.machine().startswith("armv7"), platform.machine()
'''
TIMINGS: dict[str, Any] = {}


# ---------------------------------------------------------------- the project and its world


@dataclass
class Bikes:
    path: Path
    repo: str
    registry: Registry
    mlflow_uri: str
    deploy_remote: Path
    shas: list[str] = field(default_factory=list)

    @property
    def image(self) -> str:
        return f"{self.registry.host}/{self.repo}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MACI_", "GITHUB_", "GITLAB_", "MLFLOW_"))
               and k not in {"CI_COMMIT_SHA", "GITLAB_CI"}}
        env["PYTHONUNBUFFERED"] = "1"
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.update(extra)
        return env

    def ci(self, *args: str, env: dict[str, str] | None = None, timeout: float = 1500
           ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ci", *args], cwd=self.path,
                              env=self.env(**(env or {})), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.ci("run", "release", "--json", *args, env=extra)

    def git(self, *args: str) -> str:
        return subprocess.run([*GIT, "-C", str(self.path), *args], capture_output=True,
                              text=True, check=True).stdout.strip()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def mlflow(self, path: str, **query: str) -> tuple[int, dict[str, Any]]:
        url = f"{self.mlflow_uri}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=15) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def alias(self) -> str | None:
        status, body = self.mlflow("registered-models/alias", name=MODEL, alias="champion")
        return str(body["model_version"]["version"]) if status == 200 else None

    def versions(self) -> list[str]:
        status, body = self.mlflow("model-versions/search", filter=f"name='{MODEL}'")
        assert status == 200, body
        return sorted((v["version"] for v in body.get("model_versions", [])), key=int)

    def version_tags(self, version: str) -> dict[str, str]:
        status, body = self.mlflow("model-versions/get", name=MODEL, version=version)
        assert status == 200, body
        return {t["key"]: t["value"] for t in body["model_version"].get("tags", [])}

    def world(self) -> dict[str, Any]:
        """What a user sees: release tags → digests, indexes, deploy head, alias, versions."""
        tags = {t: manifest(self.registry, self.repo, t)[0] for t in self.registry.tags(self.repo)}
        return {
            "tags": tags,
            "indexes": sorted(m["digest"] for m in self.registry.indexes(self.repo)),
            "deploy_head": head(self.deploy_remote),
            "alias": self.alias(),
            "versions": self.versions(),
        }


def head(repo: Path, ref: str = "HEAD") -> str | None:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", ref], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def manifest(registry: Registry, repo: str, ref: str, accept: str = INDEX_ACCEPT
             ) -> tuple[str, dict[str, Any]]:
    """(digest, document) of a manifest, read through the registry API."""
    status, body = registry.get(f"/v2/{repo}/manifests/{ref}", accept=accept)
    assert status == 200, body
    return "sha256:" + hashlib.sha256(body).hexdigest(), json.loads(body)


def blob(registry: Registry, repo: str, digest: str) -> bytes:
    status, body = registry.get(f"/v2/{repo}/blobs/{digest}")
    assert status == 200, body[:200]
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    return body


def file_in_image(registry: Registry, repo: str, manifest_digest: str, name: str
                  ) -> tuple[bytes, dict[str, Any]]:
    """A file's bytes from the topmost layer that has it, and the image config — read from
    the registry's blobs (no pull, no container, no qemu)."""
    _, doc = manifest(registry, repo, manifest_digest, MANIFEST_ACCEPT)
    config = json.loads(blob(registry, repo, doc["config"]["digest"]))
    for layer in reversed(doc["layers"]):
        data = blob(registry, repo, layer["digest"])
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == name and member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    return extracted.read(), config
    raise AssertionError(f"{name} is in no layer of {manifest_digest}")


def outcome(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        return json.loads(proc.stdout)  # type: ignore[no-any-return]
    except ValueError:
        raise AssertionError(f"no JSON on stdout\nstdout: {proc.stdout[-2000:]}\n"
                             f"stderr: {proc.stderr[-3000:]}") from None


def job_seconds(platforms: list[dict[str, Any]]) -> dict[str, Any]:
    """Per platform: placement, job seconds (sum of its steps), emulated seconds, steps."""
    return {p["platform"]: {"placement": p["placement"],
                            "seconds": round(sum(p["durations"].values()), 1),
                            "emulated_seconds": p["emulated_seconds"],
                            "durations": p["durations"]} for p in platforms}


def record(name: str, seconds: float, platforms: list[dict[str, Any]] | None = None,
           **extra: Any) -> None:
    TIMINGS[name] = {"wall_seconds": round(seconds, 1), **extra}
    if platforms:
        TIMINGS[name]["jobs"] = job_seconds(platforms)
    print(f"\n[bikes timing] {name}: {json.dumps(TIMINGS[name])}")


def assert_unchanged(project: Bikes, before: dict[str, Any], proc: subprocess.CompletedProcess[str],
                     *fragments: str) -> dict[str, Any]:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert project.world() == before
    for fragment in fragments:
        assert fragment in proc.stderr or fragment in proc.stdout, (fragment, proc.stderr[-3000:])
    return outcome(proc)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def three_platform_stack(docker_stack: None) -> None:
    """On top of docker_stack: the armhf base and a qemu-arm handler with flag F."""
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-arm")
    flags = handler.read_text() if handler.exists() else ""
    require("enabled" in flags and "F" in flags.split("flags:")[-1].split("\n")[0],
            "no qemu-arm binfmt handler with flag F (run `ci setup-qemu -p linux/arm/v7`)")
    ok = subprocess.run(["docker", "image", "inspect", ARMHF_BASE], capture_output=True)
    require(ok.returncode == 0,
            f"base image {ARMHF_BASE} missing for linux/arm/v7 "
            '(run MACI_BASE_ARCHES="amd64 arm64 armhf" scripts/setup-stack.sh)')


def copy_example(dest: Path, image: str, tracking_uri: str, remote: Path) -> Path:
    """The example in its own git repo: the test's image, MLflow server and deploy remote."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(
        ".maci", "model", "out", "__pycache__", "*.pyc"))
    toml = dest / "ci.toml"
    text = toml.read_text().replace(PLACEHOLDER, image)
    assert 'remote = ".maci/deploy.git"' in text and "[mlflow]" not in text
    text = text.replace('remote = ".maci/deploy.git"', f"remote = {json.dumps(str(remote))}")
    toml.write_text(text + f'\n[mlflow]\ntracking_uri = "{tracking_uri}"\n')
    for manifest_file in (dest / "deploy").glob("*.yaml"):
        manifest_file.write_text(manifest_file.read_text().replace(PLACEHOLDER, image))
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(dest)], check=True)
    subprocess.run([*GIT, "-C", str(dest), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(dest), "commit", "-q", "-m", "bikes"], check=True)
    return dest


@pytest.fixture(scope="module")
def released(three_platform_stack: None, registry: Registry, mlflow_server: Any,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bikes]:
    """examples/bikes copied, committed and released once: the world the failures must keep."""
    tmp = tmp_path_factory.mktemp("bikes")
    repo = f"e2e/bikes-{os.getpid()}"
    remote = tmp / "deploy.git"  # absolute, outside the project: created by the first deploy
    path = copy_example(tmp / "bikes", f"{registry.host}/{repo}", mlflow_server.uri, remote)
    project = Bikes(path, repo, registry, mlflow_server.uri, remote)
    started = time.monotonic()
    proc = project.run()
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    project.shas.append(project.git("rev-parse", "HEAD"))
    record("release", seconds, outcome(proc)["verdict"]["platforms"])
    yield project
    remove_local_images(project.image)  # the legs' local tags and the pulled index
    out = os.environ.get("MACI_BIKES_TIMINGS")
    if out:
        Path(out).write_text(json.dumps(TIMINGS, indent=2) + "\n")


# ---------------------------------------------------------------- scenarios


def test_release_publishes_three_platforms_with_the_registered_model(released: Bikes) -> None:
    world = released.world()
    verdict = json.loads((released.path / ".maci" / "verdict.json").read_text())
    assert verdict["passed"] is True
    assert {p["platform"]: p["placement"] for p in verdict["platforms"]} == PLACEMENTS
    assert {s["platform"] for s in verdict["smoke"] if s["passed"]} == set(PLATFORMS)
    assert all(p["tests"]["failed"] == 0 and p["tests"]["total"] > 0 for p in verdict["platforms"])

    # every release tag → the one index, which holds exactly the three platforms
    short = released.shas[0][:7]
    assert set(world["tags"]) == {f"git-{short}", "main", "latest"}
    assert len(set(world["tags"].values())) == 1
    index = world["tags"]["main"]
    assert world["indexes"] == [index]
    _, doc = manifest(released.registry, released.repo, index)
    found = {(m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
             : m["digest"] for m in doc["manifests"]}
    assert set(found) == {("linux", "amd64", None), ("linux", "arm64", None), ("linux", "arm", "v7")}

    # the gate compared a lower-is-better metric; the alias is the registered version
    model = verdict["model"]
    version = model["candidate_version"]
    assert model["passed"] is True and version == "1" and model["metrics"]["rmse"] < 18.0
    assert world["alias"] == version and world["versions"] == [version]
    sha = released.version_tags(version)["maci.model.sha256"]

    # each platform's image carries exactly those coef.npy bytes, and says so in its labels
    for (_, arch, variant), digest in found.items():
        data, config = file_in_image(released.registry, released.repo, digest, COEF_IN_IMAGE)
        assert data[:6] == b"\x93NUMPY"
        assert hashlib.sha256(data).hexdigest() == sha, (arch, variant)
        assert (config["architecture"], config.get("variant")) == (arch, variant)
        labels = config["config"]["Labels"]
        assert labels["dev.maci.model.version"] == version
        assert labels["dev.maci.model.sha256"] == sha

    # trained in the image's `train` stage, by the Debian numpy the arm/v7 image serves with
    status, run = released.mlflow("runs/get", run_id=model["run_id"])
    assert status == 200, run
    tags = {t["key"]: t["value"] for t in run["run"]["data"]["tags"]}
    params = {p["key"]: p["value"] for p in run["run"]["data"]["params"]}
    assert tags["maci.train.env"].startswith("container ") and "target train" in tags["maci.train.env"]
    ref = f"{released.image}@{index}"
    subprocess.run(["docker", "rmi", "-f", ref], capture_output=True, check=False)
    out = subprocess.run(
        ["docker", "run", "--rm", "--pull", "always", "--platform", "linux/arm/v7", "--entrypoint",
         "python3", ref, "-c", "import platform, numpy; print(platform.machine(), numpy.__version__)"],
        capture_output=True, text=True, timeout=300, check=False)
    assert out.stdout.split() == ["armv7l", params["numpy_version"]], out.stderr
    assert json.loads(tags["maci.train.packages"])["numpy"] == params["numpy_version"]

    # the deploy commit pins the index digest in kustomize `images:`; no Rollout anywhere
    remote = str(released.deploy_remote)
    log = subprocess.run(["git", "-C", remote, "log", "-1", "--format=%B"], capture_output=True,
                         text=True, check=True).stdout
    assert f"Index-Digest: {index}" in log and f"Model-Version: {version}" in log
    assert f"Source-Commit: {released.shas[0]}" in log
    show = subprocess.run(["git", "-C", remote, "show", "HEAD:deploy/kustomization.yaml"],
                          capture_output=True, text=True, check=True).stdout
    assert f"digest: {index}" in show and f"newName: {released.image}" in show
    files = subprocess.run(["git", "-C", remote, "ls-tree", "-r", "--name-only", "HEAD"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert {"deploy/kustomization.yaml", "deploy/deployment.yaml"} <= set(files)
    for name in (f for f in files if f.endswith(".yaml")):
        text = subprocess.run(["git", "-C", remote, "show", f"HEAD:{name}"], capture_output=True,
                              text=True, check=True).stdout
        assert "kind: Rollout" not in text, name


def test_degraded_model_is_rejected_by_the_rmse_gate(released: Bikes) -> None:
    before = released.world()
    started = time.monotonic()
    proc = released.run(MACI_MODEL__PARAMS=WORSE_MODEL)
    seconds = time.monotonic() - started
    data = assert_unchanged(released, before, proc, "release rejected, nothing published",
                            "model gate", "rmse")
    verdict = data["verdict"]
    model = verdict["model"]
    assert verdict["passed"] is False and model["passed"] is False
    assert model["champion_version"] == before["alias"] and model["candidate_version"] is None
    assert model["metrics"]["rmse"] > 18.0
    assert model["deltas"]["rmse"] > 0  # higher error than the champion: worse
    assert any("rmse" in r for r in verdict["reasons"])
    assert all(p["digest"] is None for p in verdict["platforms"])  # no release image pushed
    record("degraded_model", seconds, verdict["platforms"])


def test_a_test_failing_only_on_arm_v7_publishes_nothing(released: Bikes) -> None:
    before = released.world()
    test_file = released.path / "tests" / "test_cpu.py"
    test_file.write_text(ARMV7_ONLY_TEST)
    released.commit("a test that fails on 32-bit arm")
    try:
        started = time.monotonic()
        proc = released.run()
        seconds = time.monotonic() - started
    finally:
        test_file.unlink()
        released.commit("drop the arm/v7-only failure")
    data = assert_unchanged(released, before, proc, "linux/arm/v7")
    verdict = data["verdict"]
    results = {p["platform"]: p["status"] for p in verdict["platforms"]}
    assert results == {"linux/amd64": "passed", "linux/arm64": "passed", "linux/arm/v7": "failed"}
    assert verdict["reasons"][0].startswith("linux/arm/v7"), verdict["reasons"]
    arm = next(p for p in verdict["platforms"] if p["platform"] == "linux/arm/v7")
    assert arm["placement"] == "emulated" and arm["digest"] is None
    assert arm["failure"]["step"] == "test" and arm["tests"]["failed"] == 1
    junit = Path(arm["tests"]["junit_path"]).read_text()
    assert "test_not_a_32_bit_arm_cpu" in junit and "armv7l" in junit
    assert data["published"] is None and data["deploy"] is None
    record("armv7_only_failure", seconds, verdict["platforms"])


def test_matrix_flow_train_jobs_merge_deploy_promote(released: Bikes) -> None:
    """The README's local matrix: `ci train --json > gate.json`, one `ci job` per platform
    (concurrent, sharing MACI_RUN_ID), `ci merge --model-result gate.json result-*.json`,
    then `ci deploy --index` and `ci promote`."""
    before = released.world()
    sha = released.commit("matrix release")
    env = {"MACI_RUN_ID": f"bikes-matrix-{os.getpid()}"}
    out = released.path / "matrix"
    out.mkdir()
    started = time.monotonic()
    train = released.ci("train", "--json", env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    (out / "gate.json").write_text(train.stdout)
    gate = json.loads(train.stdout)
    version = gate["version"]
    assert gate["ok"] is True and version == before["alias"]  # inputs unchanged: the same model
    train_seconds = time.monotonic() - started

    legs: dict[str, tuple[subprocess.Popen[str], float]] = {}
    for platform in PLATFORMS:
        argv = [sys.executable, "-m", "ci", "job", "--platform", platform, "--model-version",
                version, "-o", str(out / f"result-{platform.replace('/', '-')}.json")]
        legs[platform] = (subprocess.Popen(argv, cwd=released.path, env=released.env(**env),
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True), time.monotonic())
    leg_seconds = {}
    for platform, (leg, leg_started) in legs.items():
        _, err = leg.communicate(timeout=1500)
        leg_seconds[platform] = round(time.monotonic() - leg_started, 1)
        assert leg.returncode == 0, (platform, err[-3000:])
    assert released.world() == before  # legs push by digest only
    results = [json.loads(p.read_text()) for p in sorted(out.glob("result-*.json"))]
    assert {r["platform"]: r["placement"] for r in results} == PLACEMENTS
    assert all(r["status"] == "passed" and r["smoke"]["passed"] for r in results)

    merge = released.ci("merge", "--model-result", str(out / "gate.json"),
                        *(str(p) for p in sorted(out.glob("result-*.json"))), "--json", env=env)
    assert merge.returncode == 0, merge.stderr[-3000:]
    after_merge = released.world()
    index = after_merge["tags"]["main"]
    assert index not in before["indexes"]
    assert after_merge["tags"]["latest"] == index and after_merge["tags"][f"git-{sha[:7]}"] == index
    _, doc = manifest(released.registry, released.repo, index)
    assert sorted((m["platform"]["architecture"], m["platform"].get("variant", ""))
                  for m in doc["manifests"]) == [("amd64", ""), ("arm", "v7"), ("arm64", "")]
    assert after_merge["deploy_head"] == before["deploy_head"]  # merge publishes, nothing more

    deploy = released.ci("deploy", "--index", index, "--model-version", version, "--json",
                         env=env)
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    promote = released.ci("promote", "--model-version", version, env=env)
    assert promote.returncode == 0, promote.stderr[-3000:]
    seconds = time.monotonic() - started
    world = released.world()
    assert world["deploy_head"] != before["deploy_head"]
    show = subprocess.run(["git", "-C", str(released.deploy_remote), "show",
                           "HEAD:deploy/kustomization.yaml"], capture_output=True, text=True,
                          check=True).stdout
    assert f"digest: {index}" in show
    assert world["alias"] == version and world["versions"] == before["versions"]
    record("matrix_flow", seconds, results, train_seconds=round(train_seconds, 1),
           leg_wall_seconds=leg_seconds)
