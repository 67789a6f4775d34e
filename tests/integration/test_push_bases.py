"""scripts/push-bases.sh: the local bases pushed to a real registry keep their platforms, and a
project naming them there (what a Dagger engine or a remote runner needs: a base it can pull)
plans with every base found in the registry, not in a local store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import Registry
from tests.fixtures.sampleapp import make_project

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "push-bases.sh"
OCI = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                 "application/vnd.docker.distribution.manifest.v2+json"])


def push(dest: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), dest], capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, **env})


def architecture(registry: Registry, repo: str, tag: str) -> str:
    status, body = registry.get(f"/v2/{repo}/manifests/{tag}", OCI)
    assert status == 200, body
    config = json.loads(body)["config"]["digest"]
    status, blob = registry.get(f"/v2/{repo}/blobs/{config}")
    assert status == 200
    return str(json.loads(blob)["architecture"])


def test_bases_are_pushed_with_their_platform_and_plan_from_the_registry(
    docker_stack: None, registry: Registry, tmp_path: Path
) -> None:
    res = push(f"{registry.host}/bases", MACI_BASE_ARCHES="amd64 arm64")
    assert res.returncode == 0, res.stderr
    assert "pushed maci/python:bookworm-arm64" in res.stdout
    repo = "bases/maci/python"
    assert registry.tags(repo) == ["bookworm-amd64", "bookworm-arm64"]
    assert architecture(registry, repo, "bookworm-amd64") == "amd64"
    assert architecture(registry, repo, "bookworm-arm64") == "arm64"
    again = push(f"{registry.host}/bases", MACI_BASE_ARCHES="amd64 arm64")
    assert again.returncode == 0, again.stderr  # idempotent

    project = make_project(tmp_path / "app", f"{registry.host}/e2e/pushed-bases")
    toml = project / "ci.toml"
    toml.write_text(toml.read_text().replace(
        'base_image = "maci/python:bookworm-{arch}"',
        f'base_image = "{registry.host}/bases/maci/python:bookworm-{{debian_arch}}"'))
    plan = subprocess.run([sys.executable, "-m", "ci", "plan", "--json", "--config", str(toml)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    bases = {j["platform"]: j["base"] for j in json.loads(plan.stdout)["jobs"]}
    for platform, arch in (("linux/amd64", "amd64"), ("linux/arm64", "arm64")):
        assert bases[platform]["status"] == "registry", bases
        assert bases[platform]["reference"].endswith(f"bookworm-{arch}")


def test_bad_destinations_are_refused(registry: Registry) -> None:
    res = push(f"http://{registry.host}")
    assert res.returncode == 2 and "without a scheme" in res.stderr
    res = push(registry.host, MACI_BASE_ARCHES="s390x")
    assert res.returncode == 1 and "maci/python:bookworm-s390x is not in the local image store" in res.stderr
