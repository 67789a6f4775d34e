"""Supply-chain costs (issue #16): push routes, attestations, signing.

One run, n samples each, medians with min-max, the 1-min load average at each sample:

1. push time of one platform image (linux/amd64, native), both routes, into an EMPTY
   repository each sample: the tag route (Engine 20.10, classic store: `docker tag` + `docker
   push` + resolve + delete the temporary tag, `DockerEngine.push_by_digest`) and the digest
   route (Engine 26, containerd store: `skopeo copy --preserve-digests` of the OCI layout,
   `oci_route.push_command` + `run_push` + `prune`, what `DockerEngine.push_layout` runs).
   Three registry states: `empty` (fresh storage, a registry address the clients never saw),
   `base` (fresh storage holding only the base image, pushed there just before by the same
   client: its layers are mounted, the app layers uploaded) and `all` (right after `base`,
   the same image into another new repository of that registry: every blob is there).
   Two images: tests/data/sampleapp (runtime target) and the same base + ~200 MB of
   incompressible data. Plus the release build itself, warm cache, both ways (the layout
   export is part of the digest route's build).
2. bytes pushed: what the clients sent to the registry (a byte-counting TCP relay in front of
   it) and what the registry stored (its blob folder before/after).
3. attestations: `oci_attest.statements` (first scan of the layers vs cached) and
   `oci_attest.push`.
4. signing: `ci.adapters.cosign.sign` / `verify` of an index digest (key pair, no tlog).

Run (root: the system daemon, the Engine 26 daemon at /run/maci-docker26):

    .venv/bin/python -m bench.supply_chain            # ~10 min, bench/supply_chain.json + BENCHMARKS.md
    .venv/bin/python -m bench.supply_chain --n 1 --no-write   # a quick check
    .venv/bin/python -m bench.supply_chain --render bench/supply_chain.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform as pyplatform
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.samples import ratio, summary
from bench.scenarios import loadavg
from ci.adapters import cosign
from ci.adapters.engines import oci_attest, oci_route
from ci.adapters.engines.docker import PUSH_TIMEOUT, DockerEngine
from ci.adapters.registry import RegistryClient
from ci.core.attest import attestation_descriptor, attestation_manifest
from ci.core.jobs import LABEL_CREATED, LABEL_VERSION
from ci.core.oci import OCI_INDEX, digest_of
from ci.core.plan import Placement
from ci.core.results import JobSpec, SourceInfo
from ci.stages import publish
from ci.stages.sign import RUN_ID, SOURCE_SHA
from tests.fixtures.registry import Registry, start_registry

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "supply_chain.json"
BENCHMARKS = ROOT / "BENCHMARKS.md"
HEADING = "## Supply chain (issue #16): push routes, attestations, signing"
SAMPLEAPP = ROOT / "tests" / "data" / "sampleapp"
DOCKER26 = "unix:///run/maci-docker26/docker.sock"
DOCKER26_PID = Path("/run/maci-docker26/dockerd.pid")
DOCKER20_PID = Path("/var/run/docker.pid")
BASE = "maci/python:bookworm-amd64"
PLATFORM = "linux/amd64"
EPOCH = 1700000000  # SOURCE_DATE_EPOCH of every build (one fixed commit time)
BIG_BYTES = 200_000_000
SHA = "5" * 40
ROUTES = ("tag", "digest")
IMAGES = ("small", "big")
STATES = ("empty", "base", "all")


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ byte-counting relay


class Relay:
    """A TCP relay on a free loopback port in front of a registry: counts the bytes each way
    (client → registry = uploads) without buffering a body, so it costs the push ~nothing."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.up = 0
        self.down = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name="relay").start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            client.close()
            return
        done = threading.Thread(target=self._pipe, args=(server, client, "down"), daemon=True)
        done.start()
        self._pipe(client, server, "up")
        done.join()
        client.close()
        server.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                dst.sendall(data)
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def sent(self) -> int:
        with self.lock:
            return self.up

    def close(self) -> None:
        self.sock.close()


class Reg:
    """A registry of our own (tests/fixtures/registry.py) behind a Relay."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.registry: Registry = start_registry(folder)
        self.relay = Relay(self.registry.port)
        self.client = RegistryClient(self.relay.host)

    @property
    def host(self) -> str:
        return self.relay.host

    def stored(self) -> int:
        blobs = self.registry.storage / "docker" / "registry" / "v2" / "blobs"
        return sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file()) if blobs.is_dir() else 0

    def close(self) -> None:
        self.client.close()
        self.relay.close()
        self.registry.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def registry(folder: Path) -> Iterator[Reg]:
    reg = Reg(folder)
    try:
        yield reg
    finally:
        reg.close()


# ------------------------------------------------------------------ measuring


def cpu_of(pidfile: Path) -> float:
    """utime + stime (seconds) of the process in `pidfile`, 0 if unreadable."""
    try:
        fields = Path(f"/proc/{pidfile.read_text().strip()}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(fn: Callable[[], Any], reg: Reg | None = None, daemon: Path | None = None) -> dict[str, Any]:
    """Run fn once: wall seconds, the 1-min load at the start, bytes up/stored, CPU seconds
    of the daemon and of our child processes (skopeo, cosign, docker CLI)."""
    load = loadavg()[0]
    up0, st0 = (reg.relay.sent(), reg.stored()) if reg else (0, 0)
    d0, c0 = (cpu_of(daemon) if daemon else 0.0), children_cpu()
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"seconds": round(seconds, 3), "load": load,
                           "child_cpu": round(children_cpu() - c0, 3)}
    if daemon:
        out["daemon_cpu"] = round(cpu_of(daemon) - d0, 3)
    if reg:
        out["sent_bytes"] = reg.relay.sent() - up0
        out["stored_bytes"] = reg.stored() - st0
    out["_value"] = value
    return out


def clean(sample: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sample.items() if not k.startswith("_")}


# ------------------------------------------------------------------ specs and builds


def make_spec(kind: str, image: str, out: Path, layout: Path, bigdir: Path) -> JobSpec:
    context = SAMPLEAPP if kind == "small" else bigdir
    return JobSpec(
        platform=PLATFORM, placement=Placement(kind="native", runner="local"),
        project="sampleapp" if kind == "small" else "bigapp", image=image,
        context=str(context), dockerfile=str(context / "Dockerfile"),
        build_target="runtime" if kind == "small" else None, test_command=["true"],
        build_args={"BASE": BASE}, labels={LABEL_VERSION: "bench", LABEL_CREATED:
                                           "2023-11-14T22:13:20Z"},
        output_dir=str(out), oci_layout=str(layout), run_id="bench-supply-chain",
        source=SourceInfo(sha=SHA, repository_url="https://example.invalid/maci/sampleapp",
                          commit_time=EPOCH),
    )


class Images:
    """The release images, built once per daemon: tag route (20.10, `--load`) and digest
    route (26, OCI layout), sampleapp and the ~200 MB variant."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bigdir = tmp / "bigctx"
        self.bigdir.mkdir()
        (self.bigdir / "Dockerfile").write_text(
            "ARG BASE=maci/python:bookworm-amd64\nFROM ${BASE}\n"
            f"RUN head -c {BIG_BYTES} /dev/urandom > /blob\n")
        self.e20 = DockerEngine("", "local")
        self.e26 = DockerEngine(DOCKER26, "docker26")
        self.info = {"tag": self.e20.ping(), "digest": self.e26.ping()}
        if not self.e26.by_digest or self.e20.by_digest:
            raise SystemExit(f"unexpected push routes: {self.info}")
        self.image_id: dict[str, str] = {}
        self.digest: dict[str, str] = {}
        self.base_layout = tmp / "base-layout"
        self.base_name = "bench/base:seed"

    def spec(self, kind: str, route: str, image: str = "", layout: Path | None = None) -> JobSpec:
        out = self.tmp / "out" / route / kind
        out.mkdir(parents=True, exist_ok=True)
        return make_spec(kind, image or f"bench/{kind}", out,
                         layout or self.tmp / "layout" / kind, self.bigdir)

    def layout_name(self, kind: str) -> str:
        """The image's name in the layout's index (BuildKit normalises `bench/x` to
        `docker.io/bench/x`; the engine's names carry their registry, so never differ)."""
        index = json.loads((self.tmp / "layout" / kind / "index.json").read_text())
        return next(str(m["annotations"]["org.opencontainers.image.ref.name"])
                    for m in index["manifests"] if m["digest"] == self.digest[kind])

    def build_all(self) -> dict[str, Any]:
        first: dict[str, Any] = {}
        for kind in IMAGES:
            started = time.perf_counter()
            self.image_id[kind] = self.e20._build_release(self.spec(kind, "tag"), Path(
                self.spec(kind, "tag").output_dir))
            first[f"tag/{kind}"] = round(time.perf_counter() - started, 3)
            started = time.perf_counter()
            self.digest[kind] = self.e26._build_release(self.spec(kind, "digest"), Path(
                self.spec(kind, "digest").output_dir))
            first[f"digest/{kind}"] = round(time.perf_counter() - started, 3)
            say(f"built {kind}: {self.image_id[kind][:19]} / {self.digest[kind][:19]}")
        # the base alone, into a layout the same way: what seeds the `base` registry state
        basedir = self.tmp / "basectx"
        basedir.mkdir()
        (basedir / "Dockerfile").write_text("ARG BASE=maci/python:bookworm-amd64\nFROM ${BASE}\n")
        meta = self.tmp / "base.meta.json"
        subprocess.run(["docker", "buildx", "build", "--progress=quiet", "--platform", PLATFORM,
                        "--build-arg", f"BASE={BASE}",
                        *oci_route.build_args(self.base_layout, self.base_name, meta, EPOCH),
                        str(basedir)], env=self.e26.env, check=True, capture_output=True)
        self.base_digest = oci_route.built_digest(meta)
        return first

    def layers(self, layout: Path, digest: str) -> list[dict[str, Any]]:
        blob = layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
        return list(json.loads(blob.read_bytes()).get("layers") or [])

    def sizes(self) -> dict[str, Any]:
        """Layer sizes: the classic store's (uncompressed) and the layout's (compressed)."""
        out: dict[str, Any] = {}
        base = {d["digest"] for d in self.layers(self.base_layout, self.base_digest)}
        for kind in IMAGES:
            layers = self.layers(self.tmp / "layout" / kind, self.digest[kind])
            res = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}",
                                  self.image_id[kind]], capture_output=True, text=True)
            out[kind] = {
                "layers": len(layers),
                "media_types": sorted({str(d["mediaType"]).rsplit(".", 1)[-1] for d in layers}),
                "base_media_types": sorted({str(d["mediaType"]) for d in layers
                                            if d["digest"] in base}),
                "base_layers_shared": sum(1 for d in layers if d["digest"] in base),
                "layout_compressed_bytes": sum(int(d["size"]) for d in layers),
                "app_compressed_bytes": sum(int(d["size"]) for d in layers if d["digest"] not in base),
                "classic_uncompressed_bytes": int(res.stdout.strip() or 0),
            }
        return out


# ------------------------------------------------------------------ 1+2 pushes


def push_tag(img: Images, kind: str, reg: Reg, repo: str) -> str:
    eng = img.e20
    eng.registry = reg.client
    spec = img.spec(kind, "tag", image=f"{reg.host}/{repo}")
    return eng.push_by_digest(spec, img.image_id[kind], Path(spec.output_dir))


def push_digest(img: Images, kind: str, reg: Reg, repo: str) -> str:
    """What DockerEngine.push_layout runs (skopeo by digest + prune), with the layout's own
    image name (the layout was built once, under one name, and is pushed to a new repo)."""
    layout = img.tmp / "layout" / kind
    cmd = oci_route.push_command(layout, img.layout_name(kind), f"{reg.host}/{repo}",
                                 img.digest[kind], insecure=True, authfile=None)
    oci_route.run_push(cmd, img.e26.env, PUSH_TIMEOUT)
    oci_route.prune(layout)
    return img.digest[kind]


def seed(img: Images, route: str, reg: Reg) -> float:
    """The base image into `bench/base` of `reg`, by the route's own client (so that client
    knows where the base layers are: docker's v2 metadata, skopeo's blob-info cache)."""
    started = time.perf_counter()
    if route == "tag":
        tag = f"{reg.host}/bench/base:seed"
        env = img.e20.env
        subprocess.run(["docker", "tag", BASE, tag], env=env, check=True, capture_output=True)
        subprocess.run(["docker", "push", tag], env=env, check=True, capture_output=True)
        subprocess.run(["docker", "rmi", "--no-prune", tag], env=env, capture_output=True)
    else:
        subprocess.run(["skopeo", "copy", "--quiet", "--preserve-digests",
                        "--dest-tls-verify=false", f"oci:{img.base_layout}:docker.io/{img.base_name}",
                        f"docker://{reg.host}/bench/base:seed"], check=True, capture_output=True)
    return round(time.perf_counter() - started, 3)


def pushes(img: Images, n: int, tmp: Path) -> dict[str, Any]:
    data: dict[str, Any] = {f"{r}/{k}/{s}": [] for r in ROUTES for k in IMAGES for s in STATES}
    seeds: dict[str, list[float]] = {r: [] for r in ROUTES}
    fns = {"tag": push_tag, "digest": push_digest}
    daemons = {"tag": DOCKER20_PID, "digest": DOCKER26_PID}
    for i in range(n):
        order = ROUTES if i % 2 == 0 else ROUTES[::-1]  # neither route always goes first
        for route in order:
            fn = fns[route]
            nonce = secrets.token_hex(3)
            for kind in IMAGES:
                with registry(tmp / f"reg-{nonce}-{kind}") as reg:
                    s = measure(lambda: fn(img, kind, reg, f"bench/{kind}-empty-{nonce}"),
                                reg, daemons[route])
                    data[f"{route}/{kind}/empty"].append(clean(s))
            # one seeded registry serves both images: the small one's app layers (< 1 KB)
            # are all it adds before the big one's `base` push
            with registry(tmp / f"reg-{nonce}-seeded") as reg:
                seeds[route].append(seed(img, route, reg))
                for kind in IMAGES:
                    for state in ("base", "all"):
                        s = measure(lambda: fn(img, kind, reg, f"bench/{kind}-{state}-{nonce}"),
                                    reg, daemons[route])
                        data[f"{route}/{kind}/{state}"].append(clean(s))
            for kind in IMAGES:
                got = {st: data[f"{route}/{kind}/{st}"][-1] for st in STATES}
                say(f"push {i + 1}/{n} {route:6} {kind:5} " + "  ".join(
                    f"{st} {v['seconds']:.2f}s {v['sent_bytes'] / 1e6:.1f}MB" for st, v in got.items()))
    return {"samples": data, "seed_seconds": seeds}


def builds(img: Images, n: int) -> dict[str, Any]:
    """The release build, warm cache: 20.10 `--load` (tag route), 26 into the persistent
    layout (digest route, as the engine does), 26 into a NEW layout folder (first release on
    a runner), and 26 `--load` (same daemon, no layout: what the layout export costs)."""
    data: dict[str, list[dict[str, Any]]] = {}
    variants: dict[str, tuple[DockerEngine, Path, Callable[[str, int], JobSpec], bool]] = {
        "tag (20.10 --load)": (img.e20, DOCKER20_PID, lambda k, i: img.spec(k, "tag"), False),
        "digest (26 layout, kept)": (img.e26, DOCKER26_PID, lambda k, i: img.spec(k, "digest"), False),
        "digest (26 layout, new folder)": (img.e26, DOCKER26_PID, lambda k, i: img.spec(
            k, "digest", layout=img.tmp / "fresh-layouts" / f"{k}-{i}"), False),
        "26 --load (no layout)": (img.e26, DOCKER26_PID, lambda k, i: img.spec(k, "digest"), True),
    }
    for i in range(n):
        for kind in IMAGES:
            for name, (eng, pid, spec_of, load) in variants.items():
                spec = spec_of(kind, i)
                s = measure(lambda: eng._build_release(spec, Path(spec.output_dir), load=load),
                            None, pid)
                if "new folder" in name:
                    shutil.rmtree(spec.oci_layout, ignore_errors=True)
                elif not load and eng is img.e26 and s["_value"] != img.digest[kind]:
                    s["changed_digest"] = s["_value"]  # the reproducibility claim, checked
                data.setdefault(f"{name}/{kind}", []).append(clean(s))
        say(f"builds {i + 1}/{n}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in data.items()))
    return data


# ------------------------------------------------------------------ 3 attestations, 4 signing


def attest_and_sign(img: Images, n: int, tmp: Path) -> dict[str, Any]:
    res = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", BASE],
                         env=img.e26.env, capture_output=True, text=True, check=True)
    base_digest = res.stdout.strip()
    data: dict[str, list[dict[str, Any]]] = {}
    keys = tmp / "keys"
    keys.mkdir()
    password = secrets.token_hex(12)
    env = {**os.environ, cosign.PASSWORD_VAR: password}
    started = time.perf_counter()
    subprocess.run([cosign.locate(env), "generate-key-pair"], cwd=keys, env=env, check=True,
                   capture_output=True)
    keygen = round(time.perf_counter() - started, 3)
    verifier = cosign.Verifier(public_key=keys / "cosign.pub")
    items_of: dict[str, list[dict[str, object]]] = {}
    with registry(tmp / "reg-attest") as reg:
        for i in range(n):
            for kind in IMAGES:
                layout = img.tmp / "layout" / kind
                digest = img.digest[kind]
                spec = img.spec(kind, "digest")
                cache = tmp / f"scan-cache-{kind}"
                first = tmp / f"scan-first-{kind}-{i}"
                s = measure(lambda: oci_attest.statements(spec, layout, digest, base_digest, first))
                data.setdefault(f"statements first scan/{kind}", []).append(clean(s))
                shutil.rmtree(first, ignore_errors=True)
                if i == 0:
                    oci_attest.statements(spec, layout, digest, base_digest, cache)
                s = measure(lambda: oci_attest.statements(spec, layout, digest, base_digest, cache))
                items = items_of[kind] = s["_value"]
                data.setdefault(f"statements cached scan/{kind}", []).append(clean(s))
                repo = f"bench/att-{kind}-{i}-{secrets.token_hex(2)}"
                push_digest(img, kind, reg, repo)  # the image first, as the job does
                pspec = img.spec(kind, "digest", image=f"{reg.host}/{repo}")
                s = measure(lambda: oci_attest.push(reg.client, pspec, items), reg)
                att = s["_value"]
                data.setdefault(f"attestation push/{kind}", []).append(clean(s))
                # 4. the index (image + attestation), signed and verified by digest
                manifest, _, _ = attestation_manifest(items)
                body = publish.build_index(reg.client, repo, {PLATFORM: digest}, {},
                                           extra=[attestation_descriptor(manifest, digest)])
                index = reg.client.put_manifest(repo, digest_of(body), body, OCI_INDEX)
                ref = f"{reg.host}/{repo}@{index}"
                notes = {SOURCE_SHA: SHA, RUN_ID: f"bench-{i}"}
                s = measure(lambda: cosign.sign(ref, notes, key=keys / "cosign.key",
                                                keyless=False, password=password,
                                                environ=os.environ), reg)
                data.setdefault(f"cosign sign/{kind}", []).append(clean(s))
                s = measure(lambda: cosign.verify(ref, verifier, environ=os.environ,
                                                  expect={SOURCE_SHA: SHA}), reg)
                if s["_value"].get(SOURCE_SHA) != SHA:
                    raise SystemExit(f"verify returned {s['_value']}")
                data.setdefault(f"cosign verify/{kind}", []).append(clean(s))
                say(f"attest/sign {i + 1}/{n} {kind}: " + ", ".join(
                    f"{k.split('/')[0]} {v[-1]['seconds']:.2f}s" for k, v in data.items()
                    if k.endswith(kind)) + f" (att {att[:19]})")
    sizes = {k: {"statements": len(v), "json_bytes": len(json.dumps(v).encode())}
             for k, v in items_of.items()}
    return {"samples": data, "keygen_seconds": keygen, "statements": sizes,
            "base_digest": base_digest}


def probe_rewrite(n: int) -> dict[str, Any]:
    """The cause of the slow warm layout build, isolated: the big image into a kept layout
    with and without `rewrite-timestamp=true` (+ SOURCE_DATE_EPOCH), alternating, warm."""
    data: dict[str, list[dict[str, Any]]] = {"rewrite-timestamp=true": [], "no rewrite": []}
    with tempfile.TemporaryDirectory(prefix="maci-bench-sc-probe-") as folder:
        tmp = Path(folder)
        img = Images(tmp)
        for i in range(n + 1):  # the first round fills each layout (not counted)
            for name, epoch in (("rewrite-timestamp=true", EPOCH), ("no rewrite", None)):
                layout = tmp / "probe" / name.split("=")[0].replace(" ", "-")
                meta = tmp / "probe.meta.json"
                cmd = ["docker", "buildx", "build", "--progress=quiet", "--platform", PLATFORM,
                       "--build-arg", f"BASE={BASE}",
                       *oci_route.build_args(layout, "docker.io/bench/big:probe", meta, epoch),
                       str(img.bigdir)]
                s = measure(lambda: subprocess.run(cmd, env=img.e26.env, check=True,
                                                   capture_output=True), None, DOCKER26_PID)
                s["digest"] = oci_route.built_digest(meta)
                if i:
                    data[name].append(clean(s))
            say(f"probe {i}/{n}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in data.items() if v))
    return data


# ------------------------------------------------------------------ machine


def _out(cmd: list[str], env: dict[str, str] | None = None) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (res.stdout or res.stderr).strip()


def machine() -> dict[str, Any]:
    env26 = {**os.environ, "DOCKER_HOST": DOCKER26}
    cosign_deb = Path("/opt/maci-cosign/VERSIONS")
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                    .splitlines() if ln.startswith("model name")), "")
    return {
        "cpu": f"{os.cpu_count()} cores, {cpu}",
        "kernel": pyplatform.release(),
        "docker_20": _out(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker_26": _out(["docker", "version", "--format", "{{.Server.Version}}"], env26),
        "docker_26_store": _out(["docker", "info", "--format", "{{json .DriverStatus}}"], env26),
        "buildx": _out(["docker", "buildx", "version"]),
        "client": _out(["docker", "version", "--format", "{{.Client.Version}}"]),
        "skopeo": _out(["skopeo", "--version"]),
        "cosign": (cosign_deb.read_text().strip().splitlines()[0] if cosign_deb.is_file()
                   else _out(["cosign", "version"])),
        "registry": _out(["docker-registry", "--version"]),
        "python": pyplatform.python_version(),
    }


# ------------------------------------------------------------------ figures + render


def figure(samples: list[dict[str, Any]], key: str = "seconds") -> dict[str, Any]:
    return summary([s.get(key) for s in samples])


def figures(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"push": {}, "ratio": {}, "build": {}, "attest": {}}
    ps = data["push"]["samples"]
    for key, samples in ps.items():
        out["push"][key] = {k: figure(samples, k) for k in
                            ("seconds", "sent_bytes", "stored_bytes", "daemon_cpu", "child_cpu",
                             "load")}
    for kind in IMAGES:
        for state in STATES:
            t = out["push"][f"tag/{kind}/{state}"]["seconds"]["median"]
            d = out["push"][f"digest/{kind}/{state}"]["seconds"]["median"]
            per = [ratio(b["seconds"], a["seconds"]) for a, b in
                   zip(ps[f"tag/{kind}/{state}"], ps[f"digest/{kind}/{state}"], strict=True)]
            out["ratio"][f"{kind}/{state}"] = {"of_medians": ratio(d, t), "per_sample": summary(per)}
    for key, samples in data["build"].items():
        out["build"][key] = {k: figure(samples, k) for k in ("seconds", "daemon_cpu", "load")}
        out["build"][key]["changed_digest"] = sorted({s["changed_digest"] for s in samples
                                                      if "changed_digest" in s})
    for key, samples in data["attest"]["samples"].items():
        out["attest"][key] = {k: figure(samples, k) for k in
                              ("seconds", "sent_bytes", "child_cpu", "load")}
    return out


def _s(f: dict[str, Any], unit: str = " s", scale: float = 1.0, nd: int = 2) -> str:
    if not f or f.get("median") is None:
        return "-"
    return (f"{f['median'] / scale:.{nd}f}{unit} ({f['min'] / scale:.{nd}f}-"
            f"{f['max'] / scale:.{nd}f})")


def _mb(f: dict[str, Any]) -> str:
    return _s(f, " MB", 1e6, 1)


def _load(f: dict[str, Any]) -> str:
    return _s(f, "", 1.0, 2)


def render(data: dict[str, Any]) -> str:
    fig = data["figures"]
    m = data["machine"]
    n = data["n"]
    sz = data["sizes"]
    L: list[str] = [HEADING, ""]
    L += [f"Measured by `bench/supply_chain.py` (`.venv/bin/python -m bench.supply_chain`, root) "
          f"in ONE run, {n} samples per figure; raw samples: `bench/supply_chain.json`. Every "
          "cell is median (min-max); `load` is the 1-min load average at each sample's start "
          "(2.0 = both cores busy: the machine is shared; in this run other work kept it at 4-7, "
          "so absolute times are inflated; the routes ran back to back in each sample, "
          "alternating which went first). One platform (linux/amd64, native). "
          f"Run {data['started']}, {data['wall_seconds']:.0f} s.", ""]
    L += ["| | |", "| --- | --- |",
          f"| CPU / kernel | {m['cpu']} / {m['kernel']} |",
          f"| tag route daemon | Docker Engine {m['docker_20']} (classic store), client {m['client']}, {m['buildx']} |",
          f"| digest route daemon | Docker Engine {m['docker_26']}, image store {m['docker_26_store']} |",
          f"| skopeo / cosign | {m['skopeo']} / {m['cosign']} |",
          f"| registry | {m['registry']}, own instance per sample on a free port, behind a byte-counting TCP relay |",
          ""]
    L += ["Images (same Dockerfile content on both daemons; `big` = base + "
          f"`RUN head -c {BIG_BYTES} /dev/urandom > /blob`, built once per daemon and reused):", "",
          "| image | layers | compressed (layout) | of which app layers | uncompressed (20.10 store) |",
          "| --- | --- | --- | --- | --- |"]
    for kind in IMAGES:
        s = sz[kind]
        L.append(f"| {kind} | {s['layers']} ({s['base_layers_shared']} from the base) | "
                 f"{s['layout_compressed_bytes'] / 1e6:.1f} MB | {s['app_compressed_bytes'] / 1e6:.1f} MB | "
                 f"{s['classic_uncompressed_bytes'] / 1e6:.1f} MB |")
    L += ["", "Registry states, each sample into a NEW repository: **empty** = fresh storage at an "
          "address neither client has seen; **base** = fresh storage holding only the base image "
          "(`bench/base`), pushed there just before by the same client (untimed; the client "
          "knows where the base blobs are and mounts them); **all** = right after `base`, the "
          "same image into another new repository of that registry (every blob present). "
          "Tag route time = `DockerEngine.push_by_digest` (docker tag + docker push + resolve + "
          "DELETE of the temporary tag + untag); digest route time = skopeo copy "
          "`--preserve-digests` of the layout + prune (`DockerEngine.push_layout`'s commands). "
          "`sent` = bytes the client sent to the registry (relay), `stored` = growth of the "
          "registry's blob folder; `CPU` = CPU seconds of dockerd 20.10 (tag route: it "
          "compresses and uploads) or of skopeo (digest route).", ""]
    L += ["### Push time per platform image", "",
          "| image | registry | route | n | time | sent | stored | CPU | load |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind in IMAGES:
        for state in STATES:
            for route in ROUTES:
                f = fig["push"][f"{route}/{kind}/{state}"]
                cpu = f["daemon_cpu"] if route == "tag" else f["child_cpu"]
                L.append(f"| {kind} | {state} | {route} | {f['seconds']['n']} | "
                         f"{_s(f['seconds'])} | {_mb(f['sent_bytes'])} | {_mb(f['stored_bytes'])} | "
                         f"{_s(cpu)} | {_load(f['load'])} |")
    L += ["", "Ratio digest route / tag route (push time; < 1 = the digest route is faster):", "",
          "| image | registry | ratio of medians | per sample (tag and digest back to back) |",
          "| --- | --- | --- | --- |"]
    for kind in IMAGES:
        for state in STATES:
            r = fig["ratio"][f"{kind}/{state}"]
            L.append(f"| {kind} | {state} | **{r['of_medians']:.2f}x** | "
                     f"{_s(r['per_sample'], 'x')} (n={r['per_sample']['n']}) |")
    seeds = data["push"]["seed_seconds"]
    L += ["", f"Seeding the base (untimed, per `base` sample): tag route {_s(summary(seeds['tag']))}, "
          f"digest route {_s(summary(seeds['digest']))}.", ""]
    L += ["### Release build, warm cache (where the digest route writes the layout)", "",
          "| variant | image | n | time | daemon CPU | load |", "| --- | --- | --- | --- | --- | --- |"]
    for key, f in fig["build"].items():
        name, kind = key.rsplit("/", 1)
        L.append(f"| {name} | {kind} | {f['seconds']['n']} | {_s(f['seconds'])} | "
                 f"{_s(f['daemon_cpu'])} | {_load(f['load'])} |")
    changed = [k for k, f in fig["build"].items() if f["changed_digest"]]
    L += ["", ("Every warm build into the kept layout gave the same manifest digest as the first build (reproducible)."
               if not changed else f"Warm builds with a DIFFERENT digest: {', '.join(changed)}."), ""]
    att = data["attest"]
    L += ["### Attestations (digest route) and signing", "",
          "| step | image | n | time | sent | load |", "| --- | --- | --- | --- | --- | --- |"]
    for key, f in fig["attest"].items():
        name, kind = key.rsplit("/", 1)
        sent = _s(f["sent_bytes"], " KiB", 1024, 1) if f["sent_bytes"]["median"] is not None else "-"
        L.append(f"| {name} | {kind} | {f['seconds']['n']} | {_s(f['seconds'])} | {sent} | "
                 f"{_load(f['load'])} |")
    L += ["", "`statements` = `oci_attest.statements` (SPDX SBOM + SLSA provenance; first scan = "
          "empty layer-scan cache, cached = every layer already scanned); `attestation push` = "
          "`oci_attest.push` (config, 2 in-toto layers, manifest by digest); `cosign sign` / "
          "`verify` = `ci.adapters.cosign.sign` / `verify` of the index digest (image + "
          f"attestation entry), key pair, no transparency log; key pair generation "
          f"{att['keygen_seconds']:.2f} s (once). Statements JSON: " + ", ".join(
              f"{k} {v['json_bytes'] / 1024:.1f} KiB" for k, v in att["statements"].items()) + ".", ""]
    L += ["### What the numbers show", "", *findings(data), ""]
    return "\n".join(L)


def findings(data: dict[str, Any]) -> list[str]:
    fig = data["figures"]
    P, R, B, A = fig["push"], fig["ratio"], fig["build"], fig["attest"]
    out: list[str] = []

    def med(f: dict[str, Any]) -> float:
        return float(f["median"]) if f and f.get("median") is not None else float("nan")

    for kind in IMAGES:
        parts = []
        for state in STATES:
            r = R[f"{kind}/{state}"]["of_medians"]
            t, d = P[f"tag/{kind}/{state}"], P[f"digest/{kind}/{state}"]
            word = "faster" if r < 1 else "SLOWER"
            parts.append(f"{state}: {med(d['seconds']):.2f} s vs {med(t['seconds']):.2f} s "
                         f"({r:.2f}x, digest route {word}; sent {med(d['sent_bytes']) / 1e6:.1f} vs "
                         f"{med(t['sent_bytes']) / 1e6:.1f} MB)")
        out.append(f"- **Push, {kind} image** (digest vs tag route): " + "; ".join(parts) + ".")
    for kind in IMAGES:
        t = P[f"tag/{kind}/empty"]
        d = P[f"digest/{kind}/empty"]
        out.append(
            f"- Cause, {kind}/empty: the tag route's dockerd spent {med(t['daemon_cpu']):.2f} CPU s "
            f"per push (docker 20.10 keeps layers uncompressed and gzips them during `docker push`); "
            f"skopeo spent {med(d['child_cpu']):.2f} CPU s (it streams the layout's blobs as they are, "
            f"compressing nothing).")
    for kind in IMAGES:
        t = P[f"tag/{kind}/all"]
        d = P[f"digest/{kind}/all"]
        out.append(
            f"- All blobs present ({kind}): tag route {med(t['seconds']):.2f} s, digest route "
            f"{med(d['seconds']):.2f} s; what is left is fixed per-push cost (the tag route's "
            "tag + manifest PUT + resolve + DELETE + untag, skopeo's start, HEAD checks and "
            "mounts and the manifest PUT).")
    for kind in IMAGES:
        load20 = B[f"tag (20.10 --load)/{kind}"]["seconds"]
        kept = B[f"digest (26 layout, kept)/{kind}"]["seconds"]
        fresh = B[f"digest (26 layout, new folder)/{kind}"]["seconds"]
        load26 = B[f"26 --load (no layout)/{kind}"]["seconds"]
        out.append(
            f"- Build, {kind} (warm): 20.10 `--load` {med(load20):.2f} s, 26 into the kept layout "
            f"{med(kept):.2f} s, 26 into a new layout folder {med(fresh):.2f} s, 26 `--load` "
            f"{med(load26):.2f} s: writing the layout costs {med(kept) - med(load26):+.2f} s over "
            f"`--load` on the same daemon ({med(fresh) - med(load26):+.2f} s into an empty folder); "
            f"route total (build + empty-registry push): tag {med(load20) + med(P[f'tag/{kind}/empty']['seconds']):.2f} s, "
            f"digest {med(kept) + med(P[f'digest/{kind}/empty']['seconds']):.2f} s.")
    for kind in IMAGES:
        kept = med(B[f"digest (26 layout, kept)/{kind}"]["seconds"])
        load20 = med(B[f"tag (20.10 --load)/{kind}"]["seconds"])
        parts = []
        for state in STATES:
            t = load20 + med(P[f"tag/{kind}/{state}"]["seconds"])
            d = kept + med(P[f"digest/{kind}/{state}"]["seconds"])
            parts.append(f"{state} {d:.2f} s vs {t:.2f} s ({d / t:.2f}x{', SLOWER' if d > t else ''})")
        out.append(f"- **Build + push, {kind}** (warm build, digest vs tag route, sums of medians): "
                   + "; ".join(parts) + ".")
    for kind in IMAGES:
        out.append(
            f"- Attestation, {kind}: statements {med(A[f'statements first scan/{kind}']['seconds']):.2f} s "
            f"first scan, {med(A[f'statements cached scan/{kind}']['seconds']):.3f} s cached; push "
            f"{med(A[f'attestation push/{kind}']['seconds']):.3f} s; cosign sign "
            f"{med(A[f'cosign sign/{kind}']['seconds']):.2f} s, verify "
            f"{med(A[f'cosign verify/{kind}']['seconds']):.2f} s.")
    pr = data.get("probe_rewrite")
    if pr:
        w, wo = (summary([x["seconds"] for x in pr[k]]) for k in ("rewrite-timestamp=true", "no rewrite"))
        cw, cwo = (summary([x["daemon_cpu"] for x in pr[k]]) for k in ("rewrite-timestamp=true", "no rewrite"))
        same = len({x["digest"] for x in pr["no rewrite"]}) == 1
        out.append(
            f"- Measured cause of the slow warm layout build (big image, kept layout, separate "
            f"probe `--probe-rewrite` right after the run, n={w['n']} each, alternating): with `rewrite-timestamp=true` {_s(w)}, "
            f"dockerd CPU {_s(cw)}; without it {_s(wo)}, CPU {_s(cwo)}. Rewriting timestamps "
            "makes BuildKit re-read, re-tar and re-compress the layers the build made on EVERY "
            "export instead of reusing the cached blob (the CPU gap says so; BuildKit's code was not read), so the cost grows with the size of the "
            "app layers (the small image's are < 1 KB, so it does not show there)"
            + ("." if same else "; without it the digest is not even stable across builds."))
    sz = data["sizes"]["small"]
    if any(t.endswith(".tar") for t in sz["base_media_types"]):
        out.append(
            f"- Measured cause of the bytes: the base layer in the digest route's layout is "
            f"UNCOMPRESSED ({', '.join(sz['base_media_types'])}, "
            f"{sz['layout_compressed_bytes'] / 1e6:.0f} MB): the Engine 26 store holds "
            f"{BASE} as it was loaded, and BuildKit's OCI exporter writes base layers as they are "
            "stored. skopeo sends them as they are; docker 20.10 gzips every layer at push time "
            "(CPU column). A base pulled from a registry (gzip layers) would not have this, nor "
            "would exporting with `compression=gzip,force-compression=true` (not measured here).")
    out += [f"- {line}" for line in data.get("notes", [])]
    return out


def write_section(text: str) -> None:
    """Append (or replace) the section at the END of BENCHMARKS.md; nothing else changes."""
    current = BENCHMARKS.read_text()
    at = current.find(HEADING)
    if at >= 0:
        current = current[:at]
    BENCHMARKS.write_text(current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.supply_chain")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--render", type=Path, help="re-render BENCHMARKS.md from this JSON")
    ap.add_argument("--no-write", action="store_true", help="print, write no file")
    ap.add_argument("--probe-rewrite", type=Path,
                    help="measure the layout build's cause (rewrite-timestamp) into this JSON")
    args = ap.parse_args(argv)
    if args.probe_rewrite:
        data = json.loads(args.probe_rewrite.read_text())
        data["probe_rewrite"] = probe_rewrite(args.n)
        args.probe_rewrite.write_text(json.dumps(data, indent=1) + "\n")
        args.render = args.probe_rewrite
    if args.render:
        data = json.loads(args.render.read_text())
        data["figures"] = figures(data)
        write_section(render(data))
        return 0
    started = time.time()
    data: dict[str, Any] = {"n": args.n, "machine": machine(),
                            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                            "loadavg_start": loadavg()}
    with tempfile.TemporaryDirectory(prefix="maci-bench-sc-") as folder:
        tmp = Path(folder)
        img = Images(tmp)
        data["engines"] = img.info
        data["first_build_seconds"] = img.build_all()
        data["sizes"] = img.sizes()
        say(f"sizes {data['sizes']}")
        # cheapest phases first; the raw data so far is kept after each (a crash loses little)
        for key, phase in (("build", lambda: builds(img, args.n)),
                           ("attest", lambda: attest_and_sign(img, args.n, tmp)),
                           ("push", lambda: pushes(img, args.n, tmp))):
            data[key] = phase()
            if not args.no_write:
                OUT.with_suffix(".partial.json").write_text(json.dumps(data, indent=1) + "\n")
        for env in (img.e20.env, img.e26.env):  # the tags our builds made, nothing else
            subprocess.run(["docker", "rmi", "bench/small:maci-amd64", "bench/big:maci-amd64"],
                           env=env, capture_output=True)
    data["loadavg_end"] = loadavg()
    data["wall_seconds"] = round(time.time() - started, 1)
    data["figures"] = figures(data)
    text = render(data)
    if args.no_write:
        print(text)
        return 0
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    write_section(text)
    OUT.with_suffix(".partial.json").unlink(missing_ok=True)
    say(f"wrote {OUT} and {BENCHMARKS} ({data['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
