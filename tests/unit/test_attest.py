"""ci.core.attest + ci.adapters.oci_layout + ci.stages.attestations (in memory): attestations
are byte-stable, named as BuildKit names them, and the SBOM sees the image's final rootfs
(later layers win, whiteouts delete); a scanned layer is never read again."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ci.adapters.oci_layout import OciLayout, packages
from ci.core.attest import (
    SLSA_V02,
    SPDX_PREDICATE,
    ModelInput,
    Package,
    attestation_descriptor,
    attestation_manifest,
    docker_purl,
    slsa_provenance,
    spdx_document,
    statement,
)
from ci.core.errors import AttestationError
from ci.core.oci import OCI_INDEX, OCI_MANIFEST, digest_of
from ci.stages.attestations import attach, read_attestations
from tests.fakes import FakeRegistry

CREATED = "2024-05-06T07:08:09Z"
COMMIT = "c0ffee" + "0" * 34
IMAGE = "sha256:" + "a" * 64
BASE = "sha256:" + "b" * 64
PKGS = [Package("deb", "libc6", "2.36-9+deb12u4", "amd64"), Package("pypi", "Flask_Cors", "4.0.1")]


def provenance(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        builder_id="https://ci.example/runner/1", repo_url="https://git.example/app.git",
        commit=COMMIT, dockerfile="docker/Dockerfile", platform="linux/amd64", target="serve",
        build_args={"PYTHON": "3.12", "A": "1"}, base_images={"python:3.12-slim": BASE},
        model=ModelInput("wine", "7", "models:/wine/7", "d" * 64))
    args.update(kw)
    return slsa_provenance(**args)


def statements(digest: str = IMAGE) -> list[dict[str, Any]]:
    subject = docker_purl("127.0.0.1:5000/team/app", "sha-c0ffee", "linux/amd64")
    return [statement(SPDX_PREDICATE, spdx_document("team/app", PKGS, CREATED), subject, digest),
            statement(SLSA_V02, provenance(), subject, digest)]


# ------------------------------------------------------------------- documents


def test_same_inputs_give_the_same_bytes_in_any_order() -> None:
    first = attestation_manifest(statements())
    again = attestation_manifest(list(reversed(statements())))
    assert first == again
    assert attestation_descriptor(first[0], IMAGE) == attestation_descriptor(again[0], IMAGE)
    other = attestation_manifest(statements("sha256:" + "c" * 64))
    assert other[0] != first[0]
    layer = first[2][0][0]
    assert b" " not in layer.replace(b"Tool: ", b"") and json.loads(layer)["_type"].endswith("v0.1")


def test_attestation_manifest_follows_the_buildkit_storage_layout() -> None:
    manifest_bytes, config_bytes, layers = attestation_manifest(statements())
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"] == {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": digest_of(config_bytes), "size": len(config_bytes)}
    assert [(d["mediaType"], d["annotations"], d["digest"]) for d in manifest["layers"]] == [
        ("application/vnd.in-toto+json", {"in-toto.io/predicate-type": kind}, digest_of(body))
        for body, kind in layers]
    assert [kind for _, kind in layers] == [SLSA_V02, SPDX_PREDICATE]  # sorted by predicate type
    assert json.loads(config_bytes) == {
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(b) for b, _ in layers]}}
    desc = attestation_descriptor(manifest_bytes, IMAGE)
    assert desc == {"mediaType": OCI_MANIFEST, "digest": digest_of(manifest_bytes),
                    "size": len(manifest_bytes),
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {"vnd.docker.reference.digest": IMAGE,
                                    "vnd.docker.reference.type": "attestation-manifest"}}


def test_statement_names_its_subject_as_a_docker_purl() -> None:
    st = statements()[0]
    assert st["subject"] == [{"name": "pkg:docker/127.0.0.1:5000/team/app@sha-c0ffee"
                                      "?platform=linux%2Famd64", "digest": {"sha256": "a" * 64}}]
    assert (st["_type"], st["predicateType"]) == ("https://in-toto.io/Statement/v0.1", SPDX_PREDICATE)
    with pytest.raises(AttestationError, match="not a sha256 digest"):
        statement(SLSA_V02, {}, "x", "a" * 64)


def test_spdx_document_fields_and_purls() -> None:
    doc = spdx_document("team/app", [*PKGS, PKGS[0], Package("deb", "perl", "1:5.36.0-7", "")], CREATED)
    assert (doc["spdxVersion"], doc["dataLicense"], doc["SPDXID"], doc["name"]) == (
        "SPDX-2.3", "CC0-1.0", "SPDXRef-DOCUMENT", "team/app")
    assert doc["creationInfo"] == {"created": CREATED, "creators": ["Tool: multiarch-ci"]}
    purls = [p["externalRefs"][0]["referenceLocator"] for p in doc["packages"]]
    assert purls == ["pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64",
                     "pkg:deb/debian/perl@1%3A5.36.0-7", "pkg:pypi/flask-cors@4.0.1"]
    first = doc["packages"][0]
    assert (first["name"], first["versionInfo"], first["downloadLocation"]) == (
        "libc6", "2.36-9+deb12u4", "NOASSERTION")
    assert first["externalRefs"][0]["referenceType"] == "purl"
    assert len({p["SPDXID"] for p in doc["packages"]}) == 3
    assert all(p["SPDXID"].startswith("SPDXRef-Package-") for p in doc["packages"])
    same = spdx_document("team/app", [*reversed(PKGS), Package("deb", "perl", "1:5.36.0-7")],
                         CREATED)
    assert same["documentNamespace"] == doc["documentNamespace"]
    assert spdx_document("team/app", PKGS, CREATED)["documentNamespace"] != doc["documentNamespace"]
    with pytest.raises(AttestationError, match="RFC 3339"):
        spdx_document("x", PKGS, "yesterday")


def test_provenance_is_v02_without_times_and_with_every_material() -> None:
    pred = provenance()
    assert pred["builder"] == {"id": "https://ci.example/runner/1"} and pred["buildType"]
    inv = pred["invocation"]
    assert inv["configSource"] == {"uri": "https://git.example/app.git", "digest": {"sha1": COMMIT},
                                   "entryPoint": "docker/Dockerfile"}
    assert inv["parameters"] == {"platform": "linux/amd64", "target": "serve",
                                 "args": {"A": "1", "PYTHON": "3.12"},
                                 "model": {"name": "wine", "version": "7"}}
    assert inv["environment"] == {"platform": "linux/amd64"}
    assert pred["metadata"] == {"completeness": {"parameters": True, "environment": True,
                                                 "materials": False}, "reproducible": True}
    assert pred["materials"] == [
        {"uri": "https://git.example/app.git", "digest": {"sha1": COMMIT}},
        {"uri": "pkg:docker/python@3.12-slim?platform=linux%2Famd64", "digest": {"sha256": "b" * 64}},
        {"uri": "models:/wine/7", "digest": {"sha256": "d" * 64}}]
    text = json.dumps(pred)
    assert "On" not in text and "buildInvocationID" not in text  # no started/finished times
    bare = provenance(model=ModelInput("wine", "7"), base_images=None, target="")
    assert [m["uri"] for m in bare["materials"]] == ["https://git.example/app.git"]
    assert "target" not in bare["invocation"]["parameters"]
    for bad in ({"commit": "main"}, {"dockerfile": "/abs/Dockerfile"}, {"dockerfile": "../Dockerfile"},
                {"base_images": {"python": "latest"}}):
        with pytest.raises(AttestationError):
            provenance(**bad)


# ------------------------------------------------------------------ OCI layout


def tar_layer(entries: dict[str, str | None], *, gz: bool = False) -> bytes:
    """A layer tar: path → text (a file), None (a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, text in entries.items():
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if text is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            data = text.encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def put(root: Path, data: bytes) -> str:
    digest = digest_of(data)
    path = root / "blobs" / "sha256" / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def make_layout(root: Path, layers: list[bytes], arch: str = "amd64") -> tuple[OciLayout, str]:
    """A buildx-style layout: index.json → index (tagged) → image + attestation manifest."""
    config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(root, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": put(root, layer), "size": len(layer)} for layer in layers],
    }).encode()
    digest = put(root, manifest)
    att, _, _ = attestation_manifest(statements(digest))
    inner = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
         "platform": {"os": "linux", "architecture": arch}},
        attestation_descriptor(att, digest)]}).encode()
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": put(root, inner), "size": len(inner),
         "annotations": {"org.opencontainers.image.ref.name": "sha-c0ffee"}}]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return OciLayout(root), digest


def stanza(name: str, version: str, status: str = "install ok installed") -> str:
    return (f"Package: {name}\nStatus: {status}\nArchitecture: amd64\nVersion: {version}\n"
            "Description: a package\n more text: with a colon\n")


def metadata(name: str, version: str) -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: not-this\n"


SITE = "usr/local/lib/python3.11/site-packages"
VENV = "opt/venv/lib/python3.11/site-packages"
LOWER = tar_layer({
    "./var/lib/dpkg/status": "\n".join([stanza("libc6", "2.36-9"), stanza("oldpkg", "1.0"),
                                        stanza("removed", "2.0", "deinstall ok config-files")]),
    "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA": metadata("six", "1.16.0"),
    f"{SITE}/gone-1.0.dist-info/METADATA": metadata("gone", "1.0"),
    f"{SITE}/dir-1.0.dist-info/METADATA": metadata("replaced", "1.0"),
    f"{VENV}/hidden-1.dist-info/METADATA": metadata("hidden", "1"),
    "usr/lib/python3/dist-packages/pluggy-1.0.0.egg-info/PKG-INFO": metadata("pluggy", "1.0.0"),
}, gz=True)
UPPER = tar_layer({
    "var/lib/dpkg/status": "\n".join([stanza("libc6", "2.36-9+deb12u4"), stanza("newpkg", "3")]),
    f"{SITE}/.wh.gone-1.0.dist-info": "",
    f"{SITE}/dir-1.0.dist-info/METADATA": None,  # a directory where a file was: hides it
    f"{VENV}/.wh..wh..opq": "",
    f"{VENV}/kept-2.dist-info/METADATA": metadata("kept", "2"),  # same layer as the opaque: kept
    "var/lib/dpkg/status.d/tzdata": "Package: tzdata\nVersion: 2024a\nArchitecture: all\n",
})
FINAL = [Package("deb", "libc6", "2.36-9+deb12u4", "amd64"), Package("deb", "newpkg", "3", "amd64"),
         Package("deb", "tzdata", "2024a", "all"), Package("pypi", "kept", "2"),
         Package("pypi", "pluggy", "1.0.0"), Package("pypi", "six", "1.16.0")]


def test_packages_apply_layers_in_order_with_whiteouts(tmp_path: Path) -> None:
    layout, digest = make_layout(tmp_path / "oci", [LOWER, UPPER])
    assert layout.find("linux/amd64") == layout.find(ref="sha-c0ffee") == digest
    assert layout.images() == [("linux/amd64", digest, "sha-c0ffee")]  # attestation left out
    assert packages(layout, digest) == FINAL
    lower_only, low = make_layout(tmp_path / "low", [LOWER])
    assert [p.name for p in packages(lower_only, low)] == ["libc6", "oldpkg", "gone", "hidden",
                                                          "pluggy", "replaced", "six"]


def test_a_scanned_layer_is_never_read_again(tmp_path: Path) -> None:
    layout, digest = make_layout(tmp_path / "oci", [LOWER, UPPER])
    cache = tmp_path / "cache"
    assert packages(layout, digest, cache) == FINAL
    assert len(list(cache.glob("layer-sha256-*.json"))) == 2
    for layer in (LOWER, UPPER):
        layout.blob_path(digest_of(layer)).unlink()
    assert packages(tmp_path / "oci", digest, cache) == FINAL  # from the cache alone
    with pytest.raises(AttestationError, match="cannot read"):
        packages(layout, digest)  # without the cache the blobs are needed


def test_broken_inputs_are_attestation_errors(tmp_path: Path) -> None:
    layout, digest = make_layout(tmp_path / "oci", [LOWER])
    with pytest.raises(AttestationError, match="0 images match"):
        layout.find("linux/arm64")
    layout.blob_path(digest_of(LOWER)).write_bytes(LOWER[:-8] + b"x" * 8)
    with pytest.raises(AttestationError, match="layer sha256:"):
        packages(layout, digest)
    with pytest.raises(AttestationError, match="not an OCI layout"):
        OciLayout(tmp_path / "nothing").find("linux/amd64")
    import gzip

    import zstandard

    plain = gzip.decompress(LOWER) if LOWER[:2] == b"\x1f\x8b" else LOWER
    zstd_layout, zdigest = make_layout(tmp_path / "z", [zstandard.ZstdCompressor().compress(plain)])
    gz_layout, gdigest = make_layout(tmp_path / "g", [LOWER])
    assert packages(zstd_layout, zdigest) == packages(gz_layout, gdigest) != []  # zstd layers read
    broken, bdigest = make_layout(tmp_path / "zb", [b"\x28\xb5\x2f\xfd" + b"\0" * 16])
    with pytest.raises(AttestationError):
        packages(broken, bdigest)


# --------------------------------------------------------- attach, read back


def test_attach_and_read_back_through_an_index() -> None:
    reg = FakeRegistry()
    amd, arm = reg.add_image("team/app", "linux/amd64"), reg.add_image("team/app", "linux/arm64")
    descs = attach(reg, "team/app", {"linux/amd64": amd, "linux/arm64": arm},
                   {"linux/amd64": statements(amd), "linux/arm64": statements(arm)})
    assert descs == attach(reg, "team/app", {"linux/arm64": arm, "linux/amd64": amd},
                           {"linux/arm64": statements(arm), "linux/amd64": statements(amd)})
    assert [d["annotations"]["vnd.docker.reference.digest"] for d in descs] == [amd, arm]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        reg.descriptor("team/app", amd), reg.descriptor("team/app", arm), *descs]}).encode()
    ref = reg.put_manifest("team/app", digest_of(index), index, OCI_INDEX)
    assert reg.index_platforms("team/app", ref) == ["linux/amd64", "linux/arm64"]
    found = read_attestations(reg, "team/app", ref)
    assert sorted(found) == ["linux/amd64", "linux/arm64"]
    assert found["linux/arm64"][SPDX_PREDICATE] == statements(arm)[0]
    assert found["linux/amd64"][SLSA_V02]["predicate"] == provenance()
    with pytest.raises(AttestationError, match="not about the image"):
        attach(reg, "team/app", {"linux/amd64": amd}, {"linux/amd64": statements(arm)})
    with pytest.raises(AttestationError, match="no such platform"):
        attach(reg, "team/app", {"linux/amd64": amd}, {"linux/s390x": statements(amd)})
