"""SBOM and provenance attestations (pure): SPDX 2.3, SLSA provenance v0.2, in-toto
statements, and the attestation manifest BuildKit stores next to each image in an index.

Everything here is deterministic on purpose: the same inputs give byte-identical
attestation manifests, so re-publishing the same build gives the same index digest. No
clock, no run id, no random namespace: keys are sorted, separators fixed, lists ordered.
The layout follows BuildKit's attestation storage (docs/attestations/attestation-storage.md
of moby/buildkit), which `docker buildx imagetools inspect` reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

from ci.core.errors import AttestationError
from ci.core.manifests import split_ref
from ci.core.oci import ATTESTATION_KEY, DIGEST_RE, OCI_MANIFEST, digest_of

STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
SPDX_PREDICATE = "https://spdx.dev/Document"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
INTOTO_MEDIA = "application/vnd.in-toto+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
PREDICATE_KEY = "in-toto.io/predicate-type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
BUILD_TYPE = "https://github.com/multiarch-ci/multiarch-ci/attestations/build@v1"
TOOL = "Tool: multiarch-ci"

_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_HEX = re.compile(r"^[0-9a-f]+$")

Layer = tuple[bytes, str]  # (statement bytes, predicate type)


def canonical(value: Any) -> bytes:
    """The one JSON encoding of attestation data: sorted keys, no spaces (stable bytes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, order=True)
class Package:
    """One installed package found in an image (a dpkg stanza or a dist-info METADATA)."""

    kind: Literal["deb", "pypi"]
    name: str
    version: str
    arch: str = ""

    @property
    def purl(self) -> str:
        """Its package URL (the SBOM's external reference scanners match advisories on)."""
        version = quote(self.version, safe=".+~_-")
        if self.kind == "pypi":
            return f"pkg:pypi/{re.sub(r'[-_.]+', '-', self.name).lower()}@{version}"
        arch = f"?arch={quote(self.arch, safe='')}" if self.arch else ""
        return f"pkg:deb/debian/{quote(self.name, safe='.+-')}@{version}{arch}"


@dataclass(frozen=True)
class ModelInput:
    """The model artifact baked into an image: named in parameters, a material when pinned."""

    name: str
    version: str
    uri: str = ""
    sha256: str = ""


def spdx_document(name: str, packages: Sequence[Package], created: str) -> dict[str, Any]:
    """An SPDX 2.3 document listing `packages` (sorted, deduplicated).

    The namespace is derived from the name and a hash of the package list, so the same
    image contents always give the same document, and different contents a new namespace.
    """
    if not _RFC3339.match(created):
        raise AttestationError(f"SBOM created time {created!r} is not an RFC 3339 timestamp")
    unique = sorted(set(packages))
    listing = hashlib.sha256(canonical([p.purl for p in unique])).hexdigest()
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://spdx.org/spdxdocs/multiarch-ci/{quote(name, safe='')}-{listing}",
        "creationInfo": {"created": created, "creators": [TOOL]},
        "packages": [_spdx_package(p) for p in unique],
    }


def _spdx_package(package: Package) -> dict[str, Any]:
    safe = re.sub(r"[^A-Za-z0-9.-]", "-", package.name)
    ident = hashlib.sha256(package.purl.encode()).hexdigest()[:16]
    return {
        "SPDXID": f"SPDXRef-Package-{package.kind}-{safe}-{ident}",
        "name": package.name,
        "versionInfo": package.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": package.purl}],
    }


def docker_purl(name: str, version: str, platform: str = "") -> str:
    """`pkg:docker/<name>@<version>?platform=linux%2Famd64`, as BuildKit names images."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    query = f"?platform={quote(platform, safe='')}" if platform else ""
    return f"pkg:docker/{name}@{quote(version, safe='.+~_-:')}{query}"


def _split_ref(ref: str) -> tuple[str, str]:
    """`python:3.12-slim@sha256:..` → ("python", "3.12-slim"); no tag → "latest"."""
    name, tag, _ = split_ref(ref)
    return name, tag or "latest"


def _hex(digest: str, what: str) -> str:
    if not DIGEST_RE.match(digest):
        raise AttestationError(f"{what}: {digest!r} is not a sha256 digest")
    return digest[len("sha256:"):]


def slsa_provenance(
    *, builder_id: str, repo_url: str, commit: str, dockerfile: str, platform: str,
    target: str = "", build_args: Mapping[str, str] | None = None,
    base_images: Mapping[str, str] | None = None, model: ModelInput | None = None,
    build_type: str = BUILD_TYPE,
) -> dict[str, Any]:
    """A SLSA provenance v0.2 predicate for one platform's build (no times, no run id).

    `build_args` must hold only non-secret values (they are published). `base_images`
    maps each base image reference to the digest it resolved to; `dockerfile` is relative
    to the build context. Materials: the source commit, the bases, the model artifact.
    """
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        raise AttestationError(f"source commit {commit!r} is not a git object id")
    entry = PurePosixPath(dockerfile)
    if entry.is_absolute() or ".." in entry.parts:
        raise AttestationError(f"dockerfile {dockerfile!r} must be relative to the build context")
    source = {"uri": repo_url, "digest": {"sha1" if len(commit) == 40 else "sha256": commit}}
    parameters: dict[str, Any] = {"platform": platform,
                                  "args": dict(sorted((build_args or {}).items()))}
    if target:
        parameters["target"] = target
    materials: list[dict[str, Any]] = [source]
    for ref, digest in sorted((base_images or {}).items()):
        materials.append({"uri": docker_purl(*_split_ref(ref), platform),
                          "digest": {"sha256": _hex(digest, f"base image {ref}")}})
    if model is not None:
        parameters["model"] = {"name": model.name, "version": model.version}
        if model.uri and model.sha256:
            if not (len(model.sha256) == 64 and _HEX.match(model.sha256)):
                raise AttestationError(f"model artifact sha256 {model.sha256!r} is not 64 hex digits")
            materials.append({"uri": model.uri, "digest": {"sha256": model.sha256}})
    return {
        "builder": {"id": builder_id},
        "buildType": build_type,
        "invocation": {
            "configSource": {**source, "entryPoint": str(entry)},
            "parameters": parameters,
            "environment": {"platform": platform},
        },
        "metadata": {
            "completeness": {"parameters": True, "environment": True, "materials": False},
            "reproducible": True,
        },
        "materials": materials,
    }


def statement(predicate_type: str, predicate: Mapping[str, Any], subject_name: str,
              subject_digest: str) -> dict[str, Any]:
    """An in-toto v0.1 statement about one image manifest (subject: its purl + digest)."""
    return {
        "_type": STATEMENT_V01,
        "predicateType": predicate_type,
        "subject": [{"name": subject_name,
                     "digest": {"sha256": _hex(subject_digest, "attestation subject")}}],
        "predicate": dict(predicate),
    }


def attestation_manifest(statements: Sequence[Mapping[str, Any]]) -> tuple[bytes, bytes, list[Layer]]:
    """(manifest bytes, config bytes, [(layer bytes, predicate type)]) of one platform's
    attestation manifest: one in-toto layer per statement, ordered by predicate type."""
    if not statements:
        raise AttestationError("an attestation manifest needs at least one statement")
    layers: list[Layer] = []
    for st in statements:
        kind = st.get("predicateType")
        if not isinstance(kind, str) or not kind:
            raise AttestationError("an in-toto statement has no predicateType")
        layers.append((canonical(st), kind))
    layers.sort(key=lambda layer: (layer[1], layer[0]))
    config = canonical({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(body) for body, _ in layers]},
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": INTOTO_MEDIA, "digest": digest_of(body), "size": len(body),
                    "annotations": {PREDICATE_KEY: kind}} for body, kind in layers],
    })
    return manifest, config, layers


def attestation_descriptor(manifest_bytes: bytes, image_digest: str) -> dict[str, Any]:
    """The index entry of an attestation manifest: unknown/unknown (never pulled to run),
    annotated with the image manifest it is about."""
    _hex(image_digest, "attested image")
    return {
        "mediaType": OCI_MANIFEST,
        "digest": digest_of(manifest_bytes),
        "size": len(manifest_bytes),
        "annotations": {REFERENCE_DIGEST: image_digest, ATTESTATION_KEY: ATTESTATION_MANIFEST},
        "platform": {"architecture": "unknown", "os": "unknown"},
    }
