"""Push by digest on the containerd image store: reproducible release images (adapter).

A daemon with the containerd image store (Docker ≥ 24 with `containerd-snapshotter`) builds
the release image straight into an OCI layout on this machine (`--output type=oci,tar=false`)
with `SOURCE_DATE_EPOCH` = the commit's time and `rewrite-timestamp=true`, so one commit +
model version + base digest gives the same manifest digest on every clean builder. `skopeo copy
--preserve-digests` then pushes exactly that manifest BY DIGEST — no temporary tag to create
and delete, blobs the registry already has are skipped, layers go up concurrently. buildx's
own `push-by-digest` is refused by the docker driver ("not implemented for docker driver"),
hence the layout. The layout persists under the state dir (`<state_dir>/oci/<platform>`):
BuildKit skips blobs it already holds, so only new layers are written; blobs no manifest
needs any more are pruned after each push.

A daemon on the classic graph-driver store (Docker 20.10) keeps the temporary-tag route;
`ci doctor` names the route of each runner.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ci.adapters import proc
from ci.core.errors import EngineError

log = logging.getLogger(__name__)

CONTAINERD_STORE = "io.containerd.snapshotter.v1"
ROUTE_DIGEST = "digest"  # OCI layout + skopeo, by digest, reproducible
ROUTE_TAG = "tag"  # docker push of a temporary tag (graph-driver store)


@dataclass(frozen=True)
class Probe:
    """What one `docker info` says about a runner: enough to pick the push route."""

    version: str
    platform: str
    containerd_store: bool

    @property
    def route(self) -> str:
        return ROUTE_DIGEST if self.containerd_store and skopeo() else ROUTE_TAG


INFO_FORMAT = "{{json .ServerVersion}} {{json .OSType}} {{json .Architecture}} {{json .DriverStatus}}"


def parse_info(text: str) -> Probe | None:
    """The output of `docker info --format INFO_FORMAT`, or None if it is not that."""
    try:
        version, os_type, arch, status = (json.loads(p) for p in text.strip().split(" ", 3))
    except ValueError:
        return None
    if not isinstance(version, str) or not version:
        return None
    pairs = status if isinstance(status, list) else []
    store = any(CONTAINERD_STORE in str(v) for pair in pairs for v in pair)
    return Probe(version=version, platform=f"{os_type or 'linux'}/{_arch(str(arch))}",
                 containerd_store=store)


def _arch(machine: str) -> str:
    """`docker info` reports the kernel's machine name (x86_64, aarch64): as an OCI arch."""
    from ci.core import platforms
    from ci.core.errors import PlatformError

    try:
        return platforms.parse(machine).architecture
    except PlatformError:
        return machine


def skopeo() -> str | None:
    return shutil.which("skopeo")


def build_args(layout: Path, name: str, metadata: Path, epoch: int | None,
               compression: str | None = None, level: int | None = None,
               rewrite: bool = True) -> list[str]:
    """buildx arguments that write the release image into `layout`, file times rewritten to
    `epoch` (unless not `rewrite`), layers in `compression` (every layer, forced) if set."""
    out = f"type=oci,tar=false,dest={layout},name={name}"
    if epoch is not None and rewrite:
        out += ",rewrite-timestamp=true"
    if compression or level is not None:
        out += f",compression={compression or 'gzip'},force-compression=true"
        if level is not None:
            out += f",compression-level={level}"
    args = ["--output", out, "--metadata-file", str(metadata)]
    if epoch is not None:
        args += ["--build-arg", f"SOURCE_DATE_EPOCH={epoch}"]
    return args


def built_digest(metadata: Path) -> str:
    """The manifest digest BuildKit wrote (`containerimage.digest` of `--metadata-file`)."""
    try:
        digest = json.loads(metadata.read_text()).get("containerimage.digest", "")
    except (OSError, ValueError) as exc:
        raise EngineError(f"buildx wrote no readable metadata file {metadata}: {exc}") from None
    if not str(digest).startswith("sha256:"):
        raise EngineError(f"buildx metadata {metadata} names no image digest")
    return str(digest)


def push_command(layout: Path, name: str, target: str, digest: str, *, insecure: bool,
                 authfile: str | None) -> list[str]:
    """`skopeo copy` of the layout's image to `target@digest`, digests preserved."""
    cmd = ["skopeo", "copy", "--quiet", "--preserve-digests",
           f"--dest-tls-verify={'false' if insecure else 'true'}"]
    if authfile:
        cmd += ["--dest-authfile", authfile]
    return [*cmd, f"oci:{layout}:{name}", f"docker://{target}@{digest}"]


def blobs_of(layout: Path, digest: str) -> dict[str, int]:
    """{digest: size} of the image's config and layers, from its manifest in the layout."""
    try:
        manifest = json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:"))
                              .read_bytes())
    except (OSError, ValueError) as exc:
        raise EngineError(f"the OCI layout {layout} lacks the manifest {digest}: {exc}") from None
    found = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    return {str(d["digest"]): int(d.get("size", 0)) for d in found if d.get("digest")}


def prune(layout: Path) -> int:
    """Remove blobs no manifest of the layout's index needs (the previous builds' layers);
    returns the bytes freed. Only our own folder, only `blobs/sha256/<hex>` files."""
    blobs = layout / "blobs" / "sha256"
    try:
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError):
        return 0
    keep: set[str] = set()
    todo = [(str(m.get("digest", "")), str(m.get("mediaType", ""))) for m in index.get("manifests", [])]
    while todo:
        digest, media_type = todo.pop()
        hex_ = digest.removeprefix("sha256:")
        if not hex_ or hex_ in keep:
            continue
        keep.add(hex_)
        if "manifest" not in media_type and "index" not in media_type:
            continue  # a config or a layer: nothing inside to follow (and never read 1 GB)
        try:
            doc = json.loads((blobs / hex_).read_bytes())
        except (OSError, ValueError):
            continue
        refs = [*doc.get("manifests", []), *doc.get("layers", [])]
        if isinstance(doc.get("config"), dict):
            refs.append(doc["config"])
        todo += [(str(d.get("digest", "")), str(d.get("mediaType", ""))) for d in refs]
    freed = 0
    for blob in blobs.iterdir() if blobs.is_dir() else []:
        if blob.name not in keep and blob.is_file():
            freed += blob.stat().st_size
            blob.unlink()
    return freed


def run_push(cmd: list[str], env: dict[str, str], timeout: float) -> proc.Result:
    return proc.run(cmd, env=env, timeout=timeout, step="push", group=True)
