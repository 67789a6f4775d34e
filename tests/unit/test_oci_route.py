"""The digest route's pure parts: `docker info` → push route, the buildx output it asks for,
the blobs a push may upload, and pruning an OCI layout to what its index still needs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ci.adapters.engines import oci_route
from ci.core import config as cfg
from ci.core.errors import ConfigError, EngineError

CONTAINERD = ('"26.1.5" "linux" "x86_64" [["driver-type","io.containerd.snapshotter.v1"]]')
CLASSIC = '"20.10.24" "linux" "aarch64" [["Backing Filesystem","extfs"]]'


def test_docker_info_names_store_and_platform() -> None:
    probe = oci_route.parse_info(CONTAINERD)
    assert probe is not None and probe.containerd_store and probe.platform == "linux/amd64"
    classic = oci_route.parse_info(CLASSIC)
    assert classic is not None and not classic.containerd_store
    assert classic.platform == "linux/arm64" and classic.route == oci_route.ROUTE_TAG


def test_build_args_rewrite_times_and_compress_only_when_asked(tmp_path: Path) -> None:
    meta = tmp_path / "m.json"
    plain = oci_route.build_args(tmp_path / "lay", "r/app:maci-x", meta, None)
    assert plain == ["--output", f"type=oci,tar=false,dest={tmp_path / 'lay'},name=r/app:maci-x",
                     "--metadata-file", str(meta)]
    full = oci_route.build_args(tmp_path / "lay", "r/app:x", meta, 1700000000, "zstd", 3)
    assert full[1].endswith(",rewrite-timestamp=true,compression=zstd,force-compression=true,"
                            "compression-level=3")
    assert full[-2:] == ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"]
    fast = oci_route.build_args(tmp_path / "lay", "r/app:x", meta, 1700000000, rewrite=False)
    assert "rewrite-timestamp" not in fast[1] and fast[-1] == "SOURCE_DATE_EPOCH=1700000000"


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    hex_ = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / hex_).write_bytes(data)
    return {"digest": f"sha256:{hex_}", "size": len(data)}


def test_blobs_of_and_prune_keep_exactly_what_the_index_needs(tmp_path: Path) -> None:
    layout = tmp_path / "lay"
    old_layer, layer, config = _blob(layout, b"old" * 100), _blob(layout, b"new"), _blob(layout, b"{}")
    manifest = _blob(layout, json.dumps({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config,
        "layers": [layer]}).encode())
    (layout / "index.json").write_text(json.dumps({"manifests": [
        {**manifest, "mediaType": "application/vnd.oci.image.manifest.v1+json"}]}))
    assert oci_route.blobs_of(layout, str(manifest["digest"])) == {
        str(config["digest"]): 2, str(layer["digest"]): 3}
    assert oci_route.prune(layout) == 300  # only the previous build's layer goes
    left = {p.name for p in (layout / "blobs" / "sha256").iterdir()}
    assert left == {str(d["digest"])[7:] for d in (layer, config, manifest)}
    assert str(old_layer["digest"])[7:] not in left
    with pytest.raises(EngineError, match="lacks the manifest"):
        oci_route.blobs_of(layout, "sha256:" + "0" * 64)


def test_compression_and_reproducible_are_config_fields() -> None:
    conf = cfg.loads('[project]\nname = "a"\nimage = "r.example/a"\n[build]\nreproducible = false\n'
                     '[publish]\ncompression = "zstd"\ncompression_level = 19\n')
    assert conf.publish.compression == "zstd" and conf.publish.compression_level == 19
    assert conf.build.reproducible is False
    for bad in ('compression = "lz4"', "compression_level = 23"):
        with pytest.raises(ConfigError, match=r"publish\.compression"):
            cfg.loads(f'[project]\nname = "a"\nimage = "r.example/a"\n[publish]\n{bad}\n')
