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
@dataclass(frozen=True)


@dataclass(frozen=True)
@dataclass(frozen=True)


def platform_str(platform: Mapping[str, Any]) -> str:
    text = f"{platform.get('os', 'unknown')}/{platform.get('architecture', 'unknown')}"
    if platform.get("variant"):
        text += f"/{platform['variant']}"
    try:
        return str(platforms.parse(text))
    except PlatformError:
        return text
