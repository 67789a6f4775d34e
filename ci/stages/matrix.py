"""Checks for a multi-job (CI matrix) pipeline, made in its plan job before any build.

Each job of a matrix pipeline runs on its own machine (or in its own folder), so a store that
lives in the project's folder is not shared: train would register the model in one job's
sqlite file and every leg would then fail, late, with "version 1 not found". Refused up front.
"""

from __future__ import annotations

import re

from ci.core.config import Config
from ci.core.errors import ManifestError, UsageError
from ci.core.manifests import Target, update_manifest

_PROBE_DIGEST = "sha256:" + "0" * 64
# scheme://… or scp-like user@host:path (git's own rule: a colon before any slash)
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/:]+@[^/:]+:")


def _local_store(uri: str) -> str | None:
    """The relative path of a store inside the job's folder, else None."""
    for prefix in ("sqlite:///", "file:"):
        if uri.startswith(prefix):
            path = uri[len(prefix):]
            return None if path.startswith("/") else path
    return None if _URL_RE.match(uri) else (uri if not uri.startswith("/") else None)


def check_matrix(config: Config) -> list[str]:
    """Refuse (UsageError, exit 2) what cannot work across jobs; return notes on what was checked."""
    notes: list[str] = []
    if config.model is not None:
        if not config.mlflow.tracking_uri:
            raise UsageError(
                "mlflow.tracking_uri: the embedded store (sqlite in the state dir) is not shared "
                "by jobs on different machines; set a tracking server (the template's "
                "`tracking-uri` input, or MACI_MLFLOW__TRACKING_URI)")
        local = _local_store(config.mlflow.tracking_uri)
        if local is not None:
            raise UsageError(
                f"mlflow.tracking_uri: {config.mlflow.tracking_uri!r} is a store in the job's own "
                "folder, not shared by the other jobs; use a tracking server (the template's "
                "`tracking-uri` input) or an absolute path on a shared filesystem")
    if config.deploy is not None:
        remote = config.deploy.remote
        if not _URL_RE.match(remote) and not remote.startswith("/"):
            raise UsageError(
                f"deploy.remote: {remote!r} is a path in the job's own folder, not shared by the "
                "deploy job; use a git URL (or an absolute path on a shared filesystem)")
        notes += _check_manifests(config)
    return notes


def _check_manifests(config: Config) -> list[str]:
    """The image the release publishes must be the one the deploy manifests name (an
    overriding `image` input otherwise fails only at deploy, after everything was pushed)."""
    dc = config.deploy
    if dc is None:
        return []
    root = config.root_path
    present = [(name, root / name) for name in dc.manifests if (root / name).is_file()]
    if not present:
        return ["deploy manifests are not in this checkout: their image is checked at deploy"]
    target = Target(repository=config.project.image, digest=_PROBE_DIGEST)
    images = 0
    for name, path in present:
        if not path.resolve().is_relative_to(root.resolve()):
            raise UsageError(f"deploy.manifests: {name!r} points outside the project")
        try:
            images += update_manifest(path.read_text(), target, file=name).images
        except ManifestError as exc:
            raise UsageError(f"deploy.manifests: {exc}") from None
    if not images:
        names = ", ".join(name for name, _ in present)
        raise UsageError(
            f"project.image: none of {names} names {config.project.image!r}; the deploy would "
            "refuse after the release was published (check the `image` input)")
    return [f"deploy manifests name {config.project.image}"]

