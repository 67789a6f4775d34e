"""A local OCI image layout (adapter): what `buildx build --output type=oci,tar=false` writes.

It finds a platform's image manifest in `index.json` and lists the packages installed in
the image (dpkg status, Python dist-info METADATA and egg-info PKG-INFO), applying the layers in order with
their whiteouts, the way the container's root filesystem would see them. Scanning a layer
is the slow part (base layers are hundreds of MB), and layers are content-addressed, so
each layer's scan is cached by digest in the caller's cache dir: a base layer is read once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from ci.core import platforms
from ci.core.attest import Package
from ci.core.errors import AttestationError, PlatformError
from ci.core.oci import ATTESTATION_KEY, DIGEST_RE, INDEX_TYPES, platform_str

__all__ = ["OciLayout", "packages", "scan_layer"]

SCAN_VERSION = 1  # bump when the per-layer record changes: old cache files are ignored
REF_KEYS = ("org.opencontainers.image.ref.name", "io.containerd.image.name")
DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
# wheels write dist-info/METADATA; Debian's python3-* debs often egg-info/PKG-INFO (same format)
DIST_INFO = re.compile(
    r"(?:^|/)(?:site|dist)-packages/[^/]+\.(?:dist-info/METADATA|egg-info/PKG-INFO|egg-info)$")
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class OciLayout:
    """One OCI layout directory: `index.json` plus `blobs/sha256/<hex>`."""

    root: Path

    def blob_path(self, digest: str) -> Path:
        if not DIGEST_RE.match(digest):
            raise AttestationError(f"{self.root}: {digest!r} is not a sha256 digest")
        return self.root / "blobs" / "sha256" / digest[len("sha256:"):]

    def json_blob(self, digest: str) -> dict[str, Any]:
        """A small JSON blob (manifest, index, config), checked against its digest."""
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AttestationError(f"{self.root}: cannot read blob {digest}: {exc.strerror}") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise AttestationError(f"{path}: content does not match its digest")
        return _json_object(data, str(path))

    def index(self) -> dict[str, Any]:
        path = self.root / "index.json"
        try:
            return _json_object(path.read_bytes(), str(path))
        except OSError as exc:
            raise AttestationError(f"{path}: not an OCI layout ({exc.strerror})") from None

    def manifest(self, digest: str) -> dict[str, Any]:
        return self.json_blob(digest)

    def config(self, manifest_digest: str) -> dict[str, Any]:
        config = self.manifest(manifest_digest).get("config") or {}
        return self.json_blob(str(config.get("digest", "")))

    def images(self) -> list[tuple[str, str, str]]:
        """(platform, manifest digest, ref name) of every runnable image the layout holds
        (nested indexes followed; attestation manifests left out)."""
        found: list[tuple[str, str, str]] = []
        for desc in self.index().get("manifests") or []:
            annotations = desc.get("annotations") or {}
            ref = next((str(annotations[k]) for k in REF_KEYS if annotations.get(k)), "")
            self._walk(desc, ref, found)
        return found

    def _walk(self, desc: dict[str, Any], ref: str, found: list[tuple[str, str, str]]) -> None:
        digest = str(desc.get("digest", ""))
        if ATTESTATION_KEY in (desc.get("annotations") or {}):
            return
        if desc.get("mediaType") in INDEX_TYPES:
            for child in self.json_blob(digest).get("manifests") or []:
                self._walk(child, ref, found)
            return
        platform = desc.get("platform") or {}
        if not platform.get("architecture"):
            config = self.config(digest)
            platform = {k: config[k] for k in ("os", "architecture", "variant") if config.get(k)}
        if platform.get("architecture") in (None, "unknown"):
            return
        found.append((platform_str(platform), digest, ref))

    def find(self, platform: str = "", ref: str = "") -> str:
        """The digest of the one image manifest for `platform` (and/or ref name)."""
        want = ""
        if platform:
            try:
                want = str(platforms.parse(platform))
            except PlatformError as exc:
                raise AttestationError(f"{self.root}: {exc.message}") from None
        hits = sorted({d for p, d, r in self.images()
                       if (not want or p == want) and (not ref or r == ref or r.endswith(f":{ref}"))})
        if len(hits) != 1:
            have = ", ".join(sorted({f"{p} {r}".strip() for p, _, r in self.images()})) or "nothing"
            raise AttestationError(f"{self.root}: {len(hits)} images match platform={platform!r} "
                                   f"ref={ref!r} (the layout holds {have})")
        return hits[0]


def _json_object(data: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise AttestationError(f"{where}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise AttestationError(f"{where}: expected a JSON object")
    return value


# ------------------------------------------------------------------ layer scan

# One layer's record (what the cache stores): the package files it writes (None: a file
# of interest replaced by something we cannot read, so it hides the lower one), the paths
# it deletes (`.wh.<name>`) and the directories it makes opaque (`.wh..wh..opq`).
Record = dict[str, Any]


class _Hashing(io.RawIOBase):
    """Reads a file while hashing it, so a layer is checked against its digest in one pass."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.sha.update(data)
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _tar_stream(raw: io.RawIOBase, where: str) -> Iterator[IO[bytes]]:
    """The uncompressed tar stream of a layer: plain, gzip or zstd (sniffed, not trusted)."""
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    magic = buffered.peek(4)[:4]
    if magic.startswith(GZIP_MAGIC):
        with gzip.GzipFile(fileobj=buffered) as gz:
            yield cast(IO[bytes], gz)
    elif magic == ZSTD_MAGIC:
        import zstandard  # a declared dependency, imported only for zstd layers

        with zstandard.ZstdDecompressor().stream_reader(buffered) as zs:
            yield cast(IO[bytes], zs)
    else:
        yield buffered


def scan_layer(path: Path, digest: str) -> Record:
    """Read one layer blob once: its package files, whiteouts and opaque directories."""
    files: dict[str, Any] = {}
    deleted: list[str] = []
    opaque: list[str] = []
    try:
        with path.open("rb") as fh:
            hashing = _Hashing(fh)
            with _tar_stream(hashing, str(path)) as stream:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for member in tar:
                        _member(tar, member, files, deleted, opaque)
                while stream.read(1 << 20):
                    pass  # the tar end may leave padding: read it, it is in the digest
            while hashing.read(1 << 20):
                pass
    except OSError as exc:
        raise AttestationError(f"layer {digest}: cannot read {path}: {exc}") from None
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise AttestationError(f"layer {digest}: not a tar layer ({exc})") from None
    if "sha256:" + hashing.sha.hexdigest() != digest:
        raise AttestationError(f"layer {digest}: {path} content does not match its digest")
    return {"version": SCAN_VERSION, "files": files, "deleted": sorted(deleted),
            "opaque": sorted(opaque)}


def _member(tar: tarfile.TarFile, member: tarfile.TarInfo, files: dict[str, Any],
            deleted: list[str], opaque: list[str]) -> None:
    name = member.name.lstrip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    name = name.rstrip("/")
    parent, _, base = name.rpartition("/")
    if base == OPAQUE:
        opaque.append(parent)
        return
    if base.startswith(WHITEOUT):
        deleted.append(f"{parent}/{base[len(WHITEOUT):]}".lstrip("/"))
        return
    kind = _interest(name)
    if not kind:
        return
    if not member.isfile():
        files[name] = None  # a link or a directory now stands where a package file was
        return
    handle = tar.extractfile(member)
    text = handle.read().decode("utf-8", "replace") if handle is not None else ""
    files[name] = _parse(kind, text)


def _interest(name: str) -> str:
    if name == DPKG_STATUS:
        return "dpkg"
    if name.startswith(DPKG_STATUS_D):
        return "dpkg.d"
    if DIST_INFO.search(name):
        return "pypi"
    return ""


def _parse(kind: str, text: str) -> list[list[str]] | None:
    """[[kind, name, version, arch]...] from a dpkg status file or a METADATA file."""
    if kind == "pypi":
        head = _fields(text.split("\n\n", 1)[0])
        if head.get("Name") and head.get("Version"):
            return [["pypi", head["Name"], head["Version"], ""]]
        return None
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = _fields(stanza)
        status = fields.get("Status")
        # status.d (distroless) files carry no Status line: each file is one installed package
        installed = "installed" in status.split() if status else kind == "dpkg.d"
        if fields.get("Package") and fields.get("Version") and installed:
            out.append(["deb", fields["Package"], fields["Version"], fields.get("Architecture", "")])
    return out


def _fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in block.splitlines():
        if line[:1] in (" ", "\t") or ":" not in line:
            continue  # continuation lines (Description...) and blanks
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cached_scan(layout: OciLayout, digest: str, cache_dir: Path | None) -> Record:
    """The layer's record from the cache, else scanned and written there atomically."""
    cache = cache_dir / f"layer-{digest.replace(':', '-')}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            record = json.loads(cache.read_text())
            if isinstance(record, dict) and record.get("version") == SCAN_VERSION:
                return record
        except (OSError, ValueError):
            pass  # a broken cache file is rescanned and rewritten
    record = scan_layer(layout.blob_path(digest), digest)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".layer-", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh, sort_keys=True)
            os.replace(tmp, cache)
        except OSError as exc:
            raise AttestationError(f"cannot write the layer scan cache {cache}: {exc}") from None
    return record


def packages(layout: OciLayout | Path, manifest_digest: str,
             cache_dir: Path | None = None) -> list[Package]:
    """The packages installed in one image of the layout, its layers applied in order.

    A later layer's file replaces an earlier one's; `.wh.<name>` deletes a path (and what
    is under it) from the layers below, `.wh..wh..opq` empties a directory below.
    """
    layout = layout if isinstance(layout, OciLayout) else OciLayout(Path(layout))
    seen: dict[str, Any] = {}
    for layer in layout.manifest(manifest_digest).get("layers") or []:
        record = _cached_scan(layout, str(layer.get("digest", "")), cache_dir)
        seen = {path: rows for path, rows in seen.items() if not _hidden(path, record)}
        seen.update(record["files"])  # the layer's own files, after its whiteouts
    found = {Package("pypi" if kind == "pypi" else "deb", name, version, arch)
             for rows in seen.values() if rows for kind, name, version, arch in rows}
    return sorted(found)


def _hidden(path: str, record: Record) -> bool:
    """Whether a lower layer's `path` is deleted or under an opaque directory of `record`."""
    if any(path == d or path.startswith(f"{d}/") for d in record["deleted"]):
        return True
    return any(o == "" or path.startswith(f"{o}/") for o in record["opaque"])
