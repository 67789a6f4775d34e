"""SBOM + SLSA provenance of one platform's release image, pushed next to it (adapter).

Made by the platform job itself, right after the image is pushed by digest (digest route):
the job has the OCI layout (packages are read from its layers, each layer scanned once ever,
cached by digest) and knows the inputs. Both documents are deterministic — no clock, no run
id — so the attestation manifest, and with it the merged index, has the same digest on every
rebuild of one commit + model + base. The merge only adds an index entry for the digest the
job reports (`PlatformResult.attestation`); `ci job` + `ci merge` legs keep theirs too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ci.adapters import oci_layout
from ci.adapters.registry import RegistryClient
from ci.core.attest import (
    SLSA_V02,
    SPDX_PREDICATE,
    ModelInput,
    attestation_manifest,
    docker_purl,
    slsa_provenance,
    spdx_document,
    statement,
)
from ci.core.jobs import LABEL_CREATED, LABEL_VERSION
from ci.core.oci import OCI_MANIFEST, ImageRef, digest_of
from ci.core.ports import RegistryPort
from ci.core.results import JobSpec
from ci.core.version import __version__

BUILDER_ID = f"https://github.com/multiarch-ci/multiarch-ci@{__version__}"
EPOCH_ZERO = "1970-01-01T00:00:00Z"


def statements(spec: JobSpec, layout: Path, digest: str, base_digest: str,
               cache: Path) -> list[dict[str, object]]:
    """The SPDX SBOM and the SLSA v0.2 provenance statements about `digest`."""
    version = spec.labels.get(LABEL_VERSION) or digest.removeprefix("sha256:")[:12]
    subject = docker_purl(spec.image, version, spec.platform)
    created = spec.labels.get(LABEL_CREATED) or EPOCH_ZERO
    sbom = spdx_document(subject, oci_layout.packages(layout, digest, cache_dir=cache), created)
    args = spec.build_args
    model = ModelInput(args["MODEL_NAME"], args.get("MODEL_VERSION", ""), args.get("MODEL_URI", ""),
                       args.get("MODEL_SHA256", "")) if args.get("MODEL_NAME") else None
    base = args.get("BASE", "")
    provenance = slsa_provenance(
        builder_id=BUILDER_ID, repo_url=spec.source.repository_url, commit=spec.source.sha,
        dockerfile=_relative(spec), platform=spec.platform, target=spec.build_target or "",
        # build args are plain config values and the model stage's MODEL_* (secrets go
        # through --secret, never a build arg), so they are published as parameters
        build_args=dict(args),
        base_images={base: base_digest} if base and base_digest else None, model=model)
    return [statement(SPDX_PREDICATE, sbom, subject, digest),
            statement(SLSA_V02, provenance, subject, digest)]


def _relative(spec: JobSpec) -> str:
    try:
        return str(Path(spec.dockerfile).relative_to(spec.context))
    except ValueError:
        return Path(spec.dockerfile).name


def upload(client: RegistryPort, repo: str,
           items: Sequence[Mapping[str, Any]]) -> tuple[str, bytes]:
    """Upload config, layers and the attestation manifest of `items` by digest (no tag);
    returns the manifest's digest and bytes. The one upload path: jobs and `attach` use it."""
    manifest, config, layers = attestation_manifest(items)
    client.put_blob(repo, config)
    for body, _ in layers:
        client.put_blob(repo, body)
    return client.put_manifest(repo, digest_of(manifest), manifest, OCI_MANIFEST), manifest


def push(client: RegistryClient, spec: JobSpec, items: list[dict[str, object]]) -> str:
    """Push one platform job's attestation manifest; returns its digest."""
    return upload(client, ImageRef.parse(spec.image).repository, items)[0]
