"""OCI data (pure): media types, image references, manifests as stored, digests, platforms.

The registry adapter moves these bytes; publish and the engines reason about them here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ci.core import platforms
from ci.core.errors import PlatformError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
ATTESTATION_KEY = "vnd.docker.reference.type"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class ImageRef:
    """An image repository split into registry host and repository path."""

    registry: str
    repository: str

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        """`host[:port]/path[:tag][@digest]`; names without a registry host are Docker Hub's."""
        name = image.split("@", 1)[0]
        head, slash, last = name.rpartition("/")
        if ":" in last:
            name = f"{head}{slash}{last.rsplit(':', 1)[0]}"
        host, _, rest = name.partition("/")
        if not rest or ("." not in host and ":" not in host and host != "localhost"):
            return cls("registry-1.docker.io", name if "/" in name else f"library/{name}")
        return cls(host, rest)

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}"


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry stores it (bytes decide the digest)."""

    digest: str
    media_type: str
    body: bytes

    @property
    def data(self) -> dict[str, Any]:
        parsed = json.loads(self.body)
        return parsed if isinstance(parsed, dict) else {}

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or self.data.get("mediaType") in INDEX_TYPES


def platform_str(platform: Mapping[str, Any]) -> str:
    text = f"{platform.get('os', 'unknown')}/{platform.get('architecture', 'unknown')}"
    if platform.get("variant"):
        text += f"/{platform['variant']}"
    try:
        return str(platforms.parse(text))
    except PlatformError:
        return text
