"""Supply chain on Docker 26 with the containerd image store (issue #16), on the real stack.

One commit of the sample app (amd64 native + arm64 under qemu), cloned twice from one origin,
each built from an empty build cache: the first clone's `ci run --dry-run` predicts the index
digest, the second clone's real `ci run` must publish exactly that index, with the same
platform digests (two clean builds of one commit). The index carries each platform's SBOM and
SLSA provenance (read back with `docker buildx imagetools inspect` and the registry API), the
platform images were pushed by digest (no temporary tag ever existed), and re-releasing the
unchanged commit writes no tag (the registry's tag link files are not rewritten).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ci.adapters.registry import RegistryClient
from ci.core.attest import SLSA_V02, SPDX_PREDICATE
from ci.stages.attestations import read_attestations
from tests.fixtures.docker26 import Docker26
from tests.fixtures.registry import Registry
from tests.fixtures.sampleapp import make_project

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CI = [str(ROOT / ".venv" / "bin" / "ci")] if (ROOT / ".venv/bin/ci").exists() else ["ci"]


@dataclass
class Release:
    origin: Path
    image: str
    repo: str
    dry: dict[str, Any]
    real: dict[str, Any]
    clone: Path
    sha: str


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def _clone(origin: Path, dest: Path) -> Path:
    _git("clone", "-q", str(origin), str(dest))
    return dest


def ci_json(cwd: Path, d26: Docker26, *args: str) -> dict[str, Any]:
    env = d26.env(MACI_LOCK_TIMEOUT="5")
    env.pop("CI", None)  # a local run: the checkout, not a CI system, names the source
    res = subprocess.run([*CI, *args, "--json"], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    data: dict[str, Any] = json.loads(res.stdout)
    return data


@pytest.fixture(scope="module")
def release(docker26: Docker26, registry: Registry,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    tmp = tmp_path_factory.mktemp("supply")
    repo = f"supply/sample-{secrets.token_hex(3)}"
    image = f"127.0.0.1:{registry.port}/{repo}"
    src = make_project(tmp / "src", image)
    origin = tmp / "origin.git"
    _git("clone", "-q", "--bare", str(src), str(origin))
    # Both builds start from an empty build cache: BuildKit clamps only timestamps NEWER than
    # SOURCE_DATE_EPOCH, so a layer cached from an older commit keeps its older times
    docker26.docker("buildx", "prune", "--all", "--force")
    first = _clone(origin, tmp / "a")
    dry = ci_json(first, docker26, "run", "--dry-run")
    docker26.docker("buildx", "prune", "--all", "--force")
    second = _clone(origin, tmp / "b")
    real = ci_json(second, docker26, "run")
    yield Release(origin, image, repo, dry, real, second, _git("rev-parse", "HEAD", cwd=second))


def test_dry_run_predicts_the_published_index_of_a_clean_rebuild(release: Release) -> None:
    dry, real = release.dry["published"], release.real["published"]
    assert dry["dry_run"] is True and real["dry_run"] is False
    assert real["digest"] == dry["digest"], "the dry run's index is not the one published"
    assert real["manifests"] == dry["manifests"], "two clean builds gave other platform digests"
    assert sorted(real["manifests"]) == ["linux/amd64", "linux/arm64"]
    assert set(real["tags"]) == {f"sha-{release.sha[:7]}", "main", "latest"}


def test_pushed_by_digest_no_temporary_tag(release: Release, registry: Registry) -> None:
    tags = registry.tags(release.repo)
    assert not [t for t in tags if t.startswith("maci-tmp-")], tags
    assert set(tags) == set(release.real["published"]["tags"])


def test_every_platform_keeps_sbom_and_provenance_under_the_index(
        release: Release, registry: Registry, docker26: Docker26) -> None:
    ref = f"{release.image}:main"
    prov = json.loads(docker26.docker("buildx", "imagetools", "inspect", ref, "--format",
                                      "{{json .Provenance}}").stdout)
    sbom = json.loads(docker26.docker("buildx", "imagetools", "inspect", ref, "--format",
                                      "{{json .SBOM}}").stdout)
    assert sorted(prov) == sorted(sbom) == ["linux/amd64", "linux/arm64"]
    for platform in prov:
        slsa = prov[platform]["SLSA"]
        assert slsa["invocation"]["configSource"]["digest"] == {"sha1": release.sha}
        assert slsa["invocation"]["environment"] == {"platform": platform}
        assert slsa["metadata"]["reproducible"] is True
        names = {p["name"] for p in sbom[platform]["SPDX"]["packages"]}
        assert {"python3", "pytest"} <= names or {"python3.11", "pytest"} <= names, sorted(names)[:20]
    client = RegistryClient(f"127.0.0.1:{registry.port}")
    found = read_attestations(client, release.repo, release.real["published"]["digest"])
    assert {p: sorted(k) for p, k in found.items()} == {
        p: sorted([SLSA_V02, SPDX_PREDICATE]) for p in ("linux/amd64", "linux/arm64")}


def test_unchanged_rerelease_writes_no_tag(release: Release, registry: Registry,
                                          docker26: Docker26) -> None:
    links = sorted((registry.storage / "docker/registry/v2/repositories" / release.repo
                    / "_manifests/tags").glob("*/current/link"))
    assert len(links) == 3
    before = {p: p.stat().st_mtime_ns for p in links}
    again = ci_json(release.clone, docker26, "run", "--force")
    published = again["published"]
    assert published["digest"] == release.real["published"]["digest"]
    assert published["tags"] == [] and sorted(published["unchanged"]) == sorted(
        release.real["published"]["tags"])
    assert {p: p.stat().st_mtime_ns for p in links} == before, "a tag was written again"
    assert os.path.exists(links[0])
