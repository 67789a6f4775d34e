"""A signed release of examples/wine on Docker 26 (containerd image store), deploy that verifies.

The whole `ci run release` — train + gate, amd64 native + arm64 under qemu, smoke, publish,
deploy, promote — with `[sign]` a cosign key pair of the project: the index is signed before
any tag moves (the signature names the source commit, the model version and the verdict
digest), the deploy verifies it before it pins. Then two refusals on the real stack, each
leaving the deploy branch where it was: an index re-assembled around the same images (so
unsigned), and the signed index offered for another source commit.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_release import Project, copy_example, head, outcome
from tests.fixtures.docker26 import Docker26
from tests.fixtures.procs import require_tool
from tests.fixtures.registry import FaultProxy, Registry, put_raw_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PASSWORD = "correct horse battery staple 16"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class Signed(Project):
    d26: Docker26

    @property
    def image(self) -> str:
        # the registry itself: Docker 26's containerd resolver tries HTTPS first on a plain
        # registry and falls back on Go's "400" answer, which the test's Python proxy lacks
        return f"{self.registry.host}/{self.repo}"

    def env(self, **extra: str) -> dict[str, str]:
        env = super().env(COSIGN_PASSWORD=PASSWORD, DOCKER_HOST=self.d26.host, **extra)
        env.pop("DOCKER_CONTEXT", None)
        return env

    def ci(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ci", *args], cwd=self.path, env=self.env(),
                              capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def signed(docker26: Docker26, registry: Registry, registry_proxy: FaultProxy,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Signed, dict[str, Any]]]:
    cosign = require_tool("cosign")
    path = copy_example(tmp_path_factory.mktemp("signed") / "wine",
                        f"{registry.host}/signed/wine")
    subprocess.run([cosign, "generate-key-pair", "--output-key-prefix", str(path / "cosign")],
                   env={"COSIGN_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}, check=True,
                   capture_output=True, timeout=60)
    with (path / "ci.toml").open("a") as toml:
        toml.write('\n[sign]\nkey = "cosign.key"\npublic_key = "cosign.pub"\n')
    (path / ".gitignore").write_text("cosign.key\n.maci/\n")
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-C", str(path),
                    "commit", "-q", "-m", "sign releases"], check=True)
    project = Signed(path, "signed/wine", registry, registry_proxy)
    project.d26 = docker26
    proc = project.run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert PASSWORD not in proc.stdout + proc.stderr
    yield project, outcome(proc)


def test_the_release_is_signed_and_the_deploy_pins_the_verified_index(
        signed: tuple[Signed, dict[str, Any]]) -> None:
    project, data = signed
    index = data["published"]["digest"]
    sha = head(project.path)
    assert data["deploy"] and not data["deploy"]["dry_run"]
    show = subprocess.run(["git", "-C", str(project.deploy_remote), "show",
                           "HEAD:k8s/kustomization.yaml"], capture_output=True, text=True,
                          check=True).stdout
    assert f"digest: {index}" in show
    verify = subprocess.run(
        [require_tool("cosign"), "verify", "--key", str(project.path / "cosign.pub"),
         "--insecure-ignore-tlog=true", "--allow-http-registry", f"{project.image}@{index}"],
        capture_output=True, text=True, timeout=120, check=False)
    assert verify.returncode == 0, verify.stderr
    notes = json.loads(verify.stdout)[0]["optional"]
    assert notes["dev.maci.source.sha"] == sha
    assert notes["dev.maci.model.version"] == data["promoted"]["version"] == "1"
    assert notes["dev.maci.verdict.digest"].startswith("sha256:")
    # the platform images were pushed by digest: only release tags + the signature's tag
    tags = project.registry.tags(project.repo)
    assert not [t for t in tags if t.startswith("maci-tmp-")]
    assert f"sha256-{index[7:]}.sig" in tags


def test_an_unsigned_reassembled_index_is_refused_and_nothing_is_committed(
        signed: tuple[Signed, dict[str, Any]]) -> None:
    project, data = signed
    status, body = project.registry.get(f"/v2/{project.repo}/manifests/{data['published']['digest']}",
                                        accept=OCI_INDEX)
    assert status == 200
    index = json.loads(body)
    index.setdefault("annotations", {})["org.opencontainers.image.description"] = "tampered"
    raw = json.dumps(index).encode()
    tampered = "sha256:" + hashlib.sha256(raw).hexdigest()
    put_raw_manifest(project.registry.url, project.repo, tampered, raw, OCI_INDEX)
    before = head(project.deploy_remote)
    proc = project.ci("deploy", "--index", f"{project.image}@{tampered}")
    assert proc.returncode == 1, proc.stderr
    assert "refusing to deploy" in proc.stderr and tampered[:19] in proc.stderr
    assert head(project.deploy_remote) == before


def test_the_signed_index_for_another_commit_is_refused(
        signed: tuple[Signed, dict[str, Any]]) -> None:
    project, data = signed
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "-C",
                    str(project.path), "commit", "-q", "--allow-empty", "-m", "newer"], check=True)
    before = head(project.deploy_remote)
    proc = project.ci("deploy", "--index", f"{project.image}@{data['published']['digest']}")
    assert proc.returncode == 1, proc.stderr
    assert "refusing to deploy" in proc.stderr and head(project.path) in proc.stderr
    assert head(project.deploy_remote) == before
