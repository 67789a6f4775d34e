"""Attestations through the merge: per-platform SBOM + provenance next to each image.

A per-platform build pushes its image by digest; the merge makes a new index, so the
attestations BuildKit would have stored in a per-platform index would be lost. `attach`
uploads one attestation manifest per platform (by digest, no tag sees it) and returns the
index entries publish adds after the images; `read_attestations` reads them back from the
merged index, the way `docker buildx imagetools inspect` does, to verify the release.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ci.adapters.engines.oci_attest import upload
from ci.core import platforms
from ci.core.attest import (
    ATTESTATION_MANIFEST,
    INTOTO_MEDIA,
    PREDICATE_KEY,
    REFERENCE_DIGEST,
    attestation_descriptor,
)
from ci.core.errors import AttestationError, PlatformError
from ci.core.oci import ATTESTATION_KEY, digest_of, platform_str
from ci.core.ports import RegistryPort

Statement = Mapping[str, Any]


def _normal(platform: str) -> str:
    try:
        return str(platforms.parse(platform))
    except PlatformError as exc:
        raise AttestationError(f"attestations: {exc.message}") from None


def _check_subject(st: Statement, image_digest: str, platform: str) -> None:
    """A statement must be about the image it is attached to (else a reader trusts a lie)."""
    hexes = {str((s.get("digest") or {}).get("sha256", "")) for s in st.get("subject") or []}
    if image_digest.removeprefix("sha256:") not in hexes:
        raise AttestationError(f"{platform}: a {st.get('predicateType')} statement is not about "
                               f"the image {image_digest}")


def attach(client: RegistryPort, repo: str, platform_manifests: Mapping[str, str],
           statements_for: Mapping[str, Sequence[Statement]]) -> list[dict[str, Any]]:
    """Upload each platform's attestation manifest (config, layers, manifest, by digest) and
    return its index descriptors, in platform order. Platforms without statements get none."""
    images = {_normal(p): d for p, d in platform_manifests.items()}
    wanted = {_normal(p): list(s) for p, s in statements_for.items() if s}
    stray = sorted(set(wanted) - set(images))
    if stray:
        raise AttestationError(f"attestations for {', '.join(stray)}: no such platform image")
    descriptors = []
    for platform in sorted(wanted):
        image_digest = images[platform]
        for st in wanted[platform]:
            _check_subject(st, image_digest, platform)
        _, manifest = upload(client, repo, wanted[platform])
        descriptors.append(attestation_descriptor(manifest, image_digest))
    return descriptors


def read_attestations(client: RegistryPort, repo: str,
                      index_digest: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{platform: {predicate type: statement}} of a merged index (digests checked)."""
    index = client.get_manifest(repo, index_digest)
    if not index.is_index:
        raise AttestationError(f"{repo}@{index_digest} is a single image, not an index")
    entries = index.data.get("manifests") or []
    images = {str(e.get("digest")): platform_str(e.get("platform") or {}) for e in entries
              if ATTESTATION_KEY not in (e.get("annotations") or {})}
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in entries:
        notes = entry.get("annotations") or {}
        if notes.get(ATTESTATION_KEY) != ATTESTATION_MANIFEST:
            continue
        ref = str(notes.get(REFERENCE_DIGEST, ""))
        if ref not in images:
            raise AttestationError(f"{repo}@{index_digest}: attestation {entry.get('digest')} "
                                   f"refers to {ref or 'nothing'}, not an image of the index")
        manifest = client.get_manifest(repo, str(entry.get("digest")))
        for layer in manifest.data.get("layers") or []:
            if layer.get("mediaType") != INTOTO_MEDIA:
                continue  # unknown layer types are ignored, as the storage format says
            st = _statement(client, repo, layer)
            _check_subject(st, ref, images[ref])
            found.setdefault(images[ref], {})[str(st["predicateType"])] = st
    return found


def _statement(client: RegistryPort, repo: str, layer: Mapping[str, Any]) -> dict[str, Any]:
    digest = str(layer.get("digest", ""))
    body = client.get_blob(repo, digest)
    if digest_of(body) != digest:
        raise AttestationError(f"{repo}: attestation layer {digest} has digest {digest_of(body)}")
    try:
        st: Any = json.loads(body)
    except ValueError as exc:
        raise AttestationError(f"{repo}: attestation layer {digest} is not JSON ({exc})") from None
    declared = (layer.get("annotations") or {}).get(PREDICATE_KEY)
    kind = st.get("predicateType") if isinstance(st, dict) else None
    if not isinstance(kind, str) or not kind or (declared and kind != declared):
        raise AttestationError(f"{repo}: attestation layer {digest} is not the {declared} "
                               "statement its annotation says")
    return dict(st)
