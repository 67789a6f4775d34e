"""The CI matrix flow, simulated locally: two `ci job` processes (linux/amd64 native, linux/arm64
under qemu) write their results, as two matrix legs would, then `ci merge` publishes, against the
real local registry. A missing or mismatched leg is refused with nothing published.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ci.core.results import PlatformResult
from tests.fixtures.registry import INDEX_TYPES, Registry
from tests.fixtures.sampleapp import head_sha, make_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLATFORMS = ("linux/amd64", "linux/arm64")
MANIFEST_TYPES = ", ".join([*INDEX_TYPES, "application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"])
# CI variables that would make `ci` read another provider's context instead of local git.
CI_VARS = ("GITHUB_ACTIONS", "GITLAB_CI")


@dataclass
class Leg:
    platform: str
    path: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def result(self) -> PlatformResult:
        return PlatformResult.model_validate_json(self.path.read_text())


@dataclass
class Matrix:
    project: Path
    repo: str
    legs: dict[str, Leg]
    env: dict[str, str]


def slug(platform: str) -> str:
    return platform.replace("/", "-")


def ci(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ci", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600, check=False)


@pytest.fixture(scope="module")
def matrix(docker_stack: None, registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    """Both legs as separate, concurrent processes sharing only a run id and the registry."""
    token = secrets.token_hex(3)
    repo = f"e2e/matrix-{token}"
    project = make_project(tmp_path_factory.mktemp("matrix") / "app", f"{registry.host}/{repo}")
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    env["MACI_RUN_ID"] = f"matrix-{token}"
    started: dict[str, tuple[subprocess.Popen[str], float, Path]] = {}
    for platform in PLATFORMS:
        out = project / "results" / f"result-{slug(platform)}.json"
        argv = [sys.executable, "-m", "ci", "job", "--config", str(project / "ci.toml"),
                "--platform", platform, "--output", str(out)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=project)
        started[platform] = (proc, time.monotonic(), out)
    legs = {}
    for platform, (proc, t0, out) in started.items():
        try:
            stdout, stderr = proc.communicate(timeout=1500)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        legs[platform] = Leg(platform, out, proc.returncode, stdout, stderr, time.monotonic() - t0)
    return Matrix(project, repo, legs, env)


def manifest(registry: Registry, repo: str, ref: str) -> dict[str, Any]:
    status, body = registry.get(f"/v2/{repo}/manifests/{ref}", accept=MANIFEST_TYPES)
    assert status == 200, (ref, body[:300])
    data: dict[str, Any] = json.loads(body)
    return data


def test_each_leg_pushes_its_platform_by_digest_and_moves_no_tag(
    matrix: Matrix, registry: Registry
) -> None:
    sha = head_sha(matrix.project)
    for platform, leg in matrix.legs.items():
        assert leg.returncode == 0, f"{platform}: {leg.stdout[-2000:]}\n{leg.stderr[-2000:]}"
        result = leg.result
        assert result.platform == platform and result.status == "passed"
        assert result.placement == ("native" if platform == "linux/amd64" else "emulated")
        assert result.tests is not None and result.tests.total > 0 and result.tests.ok
        assert result.digest and result.digest.startswith("sha256:")
        assert result.source.sha == sha and result.run_id == matrix.env["MACI_RUN_ID"]
        manifest(registry, matrix.repo, result.digest)  # the digest is in the registry
    assert matrix.legs["linux/arm64"].result.emulated_seconds > 0
    # Push by digest: both images are stored, no tag exists yet.
    assert registry.tags(matrix.repo) == []
    assert registry.indexes(matrix.repo) == []


def test_merge_refuses_incomplete_or_mismatched_sets_then_publishes_the_full_one(
    matrix: Matrix, registry: Registry, tmp_path: Path
) -> None:
    for platform, leg in matrix.legs.items():
        assert leg.returncode == 0, f"{platform} leg failed: {leg.stderr[-2000:]}"
    config = str(matrix.project / "ci.toml")
    amd64 = str(matrix.legs["linux/amd64"].path)
    arm64 = str(matrix.legs["linux/arm64"].path)

    # 1. A missing leg (the arm64 job never reported): refused, nothing published.
    res = ci(["merge", "--config", config, "--json", amd64], matrix.env, matrix.project)
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] is False and report["publish"] is None
    assert "linux/arm64" in report["error"] and "linux/arm64" in res.stderr
    assert registry.tags(matrix.repo) == [] and registry.indexes(matrix.repo) == []

    # 2. A leg from another commit (a stale artifact): refused, nothing published.
    stale = json.loads(Path(arm64).read_text())
    stale["source"]["sha"] = "0" * 40
    other = tmp_path / "result-linux-arm64.json"
    other.write_text(json.dumps(stale))
    res = ci(["merge", "--config", config, amd64, str(other)], matrix.env, matrix.project)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "results do not belong to one release" in res.stderr and "source commits" in res.stderr
    assert registry.tags(matrix.repo) == [] and registry.indexes(matrix.repo) == []

    # 3. Every leg passed: one index with exactly both platforms, the tags all point at it.
    t0 = time.monotonic()
    res = ci(["merge", "--config", config, "--json", amd64, arm64], matrix.env, matrix.project)
    merge_seconds = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    published = json.loads(res.stdout)["publish"]
    assert sorted(published["platforms"]) == sorted(PLATFORMS)
    short = head_sha(matrix.project)[:7]
    assert f"sha-{short}" in published["tags"] and "main" in published["tags"]
    assert registry.tags(matrix.repo) == sorted(published["tags"])
    index = manifest(registry, matrix.repo, published["digest"])
    assert index["mediaType"] in INDEX_TYPES
    entries = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
               for m in index["manifests"]}
    assert entries == {p: leg.result.digest for p, leg in matrix.legs.items()}
    for tag in published["tags"]:
        status, _ = registry.get(f"/v2/{matrix.repo}/manifests/{tag}", accept=MANIFEST_TYPES)
        assert status == 200
        tagged = manifest(registry, matrix.repo, tag)
        assert tagged == index, f"tag {tag} does not point at the published index"
    legs = ", ".join(f"{p} {leg.seconds:.1f} s" for p, leg in matrix.legs.items())
    print(f"\nmatrix flow: legs {legs}; merge {merge_seconds:.1f} s")
