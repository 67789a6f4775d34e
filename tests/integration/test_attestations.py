"""Attestations kept through the merge, against a real registry (distribution 2.8): a tiny
image pushed with put_blob/put_manifest, its SBOM + provenance attached, an index holding
both, read back by us and (when buildx is installed) by `docker buildx imagetools inspect`."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from typing import Any

import pytest

from ci.adapters.registry import RegistryClient
from ci.core.attest import (
    SLSA_V02,
    SPDX_PREDICATE,
    ModelInput,
    Package,
    docker_purl,
    slsa_provenance,
    spdx_document,
    statement,
)
from ci.core.oci import OCI_INDEX, OCI_MANIFEST, digest_of
from ci.stages.attestations import attach, read_attestations
from ci.stages.publish import build_index, verify_index
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.integration
PLATFORMS = ["linux/amd64", "linux/arm64"]
COMMIT = "c0ffee" + "0" * 34


def push_image(client: RegistryClient, repo: str, platform: str) -> str:
    """One config + one layer + a manifest, uploaded with our own put_blob/put_manifest."""
    os_name, arch = platform.split("/")
    layer = secrets.token_bytes(64)
    config = json.dumps({"architecture": arch, "os": os_name,
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": client.put_blob(repo, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": client.put_blob(repo, layer), "size": len(layer)}],
    }).encode()
    return client.put_manifest(repo, digest_of(manifest), manifest, OCI_MANIFEST)


def statements_for(host: str, repo: str, platform: str, digest: str) -> list[dict[str, Any]]:
    subject = docker_purl(f"{host}/{repo}", "sha-c0ffee", platform)
    sbom = spdx_document(f"{repo} {platform}", [
        Package("deb", "libc6", "2.36-9+deb12u4", platform.split("/")[1]),
        Package("pypi", "flask", "3.0.3")], "2024-05-06T07:08:09Z")
    prov = slsa_provenance(
        builder_id="https://ci.example/multiarch-ci", repo_url="https://git.example/app.git",
        commit=COMMIT, dockerfile="Dockerfile", platform=platform, build_args={"PYTHON": "3.12"},
        base_images={"python:3.12-slim": "sha256:" + "b" * 64},
        model=ModelInput("wine", "7", "models:/wine/7", "d" * 64))
    return [statement(SPDX_PREDICATE, sbom, subject, digest),
            statement(SLSA_V02, prov, subject, digest)]


def merged_index(client: RegistryClient, repo: str, digests: dict[str, str],
                 host: str) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """The index publish builds, plus the attestation entries after the images."""
    wanted = {p: statements_for(host, repo, p, d) for p, d in digests.items()}
    descriptors = attach(client, repo, digests, wanted)
    index = json.loads(build_index(client, repo, digests, {}))
    index["manifests"] += descriptors
    body = json.dumps(index, indent=2).encode()
    return client.put_manifest(repo, digest_of(body), body, OCI_INDEX), wanted


def test_attestations_survive_the_merge(registry: Registry) -> None:
    repo = f"it/attest-{secrets.token_hex(4)}"
    client = RegistryClient(registry.host)
    digests = {p: push_image(client, repo, p) for p in PLATFORMS}
    assert client.put_blob(repo, b"again") == client.put_blob(repo, b"again")  # HEAD hit: no upload
    ref, wanted = merged_index(client, repo, digests, registry.host)
    assert verify_index(client, repo, ref, PLATFORMS) == PLATFORMS  # attestations are not platforms
    found = read_attestations(client, repo, ref)
    assert sorted(found) == PLATFORMS
    for platform in PLATFORMS:
        assert found[platform] == {st["predicateType"]: st for st in wanted[platform]}
    again, _ = merged_index(client, repo, digests, registry.host)
    assert again == ref  # deterministic: same inputs, same index digest
    client.close()


def _buildx() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "buildx", "version"], capture_output=True,
                          timeout=30).returncode == 0


@pytest.mark.skipif(not _buildx(), reason="docker buildx is not installed")
def test_buildx_imagetools_shows_our_provenance_and_sbom(registry: Registry) -> None:
    repo = f"it/attest-{secrets.token_hex(4)}"
    client = RegistryClient(registry.host)
    digests = {p: push_image(client, repo, p) for p in PLATFORMS}
    ref, wanted = merged_index(client, repo, digests, registry.host)
    client.close()

    def inspect(field: str) -> Any:
        out = subprocess.run(
            ["docker", "buildx", "imagetools", "inspect", f"{registry.host}/{repo}@{ref}",
             "--format", f"{{{{json .{field}}}}}"],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    provenance, sbom = inspect("Provenance"), inspect("SBOM")
    for platform in PLATFORMS:
        by_type = {st["predicateType"]: st["predicate"] for st in wanted[platform]}
        assert provenance[platform]["SLSA"] == by_type[SLSA_V02]
        assert sbom[platform]["SPDX"] == by_type[SPDX_PREDICATE]
