"""The benchmark's own stack: a registry on a free port, a counting proxy, a second dockerd.

The harness never touches the user's 127.0.0.1:5000 registry, examples/wine/.maci or the
default daemon's containers: every server here is started on a free loopback port (or its
own socket), recorded by pid and stopped by that pid.
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fixtures.dockerd import Dockerd, start_dockerd
from tests.fixtures.procs import ServerProcess as Server
from tests.fixtures.registry import read_body
from tests.fixtures.registry import start_registry as fixture_registry

BASES = {"amd64": "maci/python:bookworm-amd64", "arm64": "maci/python:bookworm-arm64"}


# Processes, the registry and the second daemon start exactly as the test fixtures start
# them (tests/fixtures/): one implementation of the real stack for tests and benchmarks.


def start_registry(folder: Path) -> tuple[Server, int]:
    """`docker-registry serve` (distribution 2.8) with deletes enabled, on a free port."""
    folder.mkdir(parents=True, exist_ok=True)
    registry = fixture_registry(folder)
    return registry.server, registry.port


# ------------------------------------------------------------------ counting proxy


@dataclass
class Hit:
    """One request through the proxy: what it was and how many body bytes went each way."""

    t: float
    method: str
    path: str
    status: int
    sent: int  # request body bytes (client → registry): uploads
    received: int  # response body bytes (registry → client): downloads
    agent: str

    @property
    def kind(self) -> str:
        if "/blobs/uploads" in self.path:
            return "blob-upload"
        if "/blobs/" in self.path:
            return "blob-read" if self.method == "GET" else "blob-check"
        if "/manifests/" in self.path:
            return "manifest-write" if self.method in ("PUT", "DELETE") else "manifest-read"
        return "other"


@dataclass
class CountingProxy:
    """A transparent HTTP proxy in front of the registry that records every request's bytes."""

    upstream: int
    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> CountingProxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="bench-proxy",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def mark(self) -> int:
        with self.lock:
            return len(self.hits)

    def since(self, mark: int) -> list[Hit]:
        with self.lock:
            return list(self.hits[mark:])


def _handler(proxy: CountingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            body = read_body(self)
            conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=600)
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():
                if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                    conn.putheader(key, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in {"transfer-encoding", "connection"}]
            conn.close()
            hit = Hit(time.time(), self.command, self.path.split("?", 1)[0], resp.status,
                      len(body), len(data), self.headers.get("User-Agent", "").split(" ")[0])
            with proxy.lock:
                proxy.hits.append(hit)
            self.send_response(resp.status)
            for key, value in headers:
                self.send_header(key, value)
            if not any(k.lower() == "content-length" for k, _ in headers):
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    return Handler


# ------------------------------------------------------------------ second dockerd


def start_second_daemon(images: list[str]) -> Dockerd:
    """A second Docker daemon (own data-root, exec-root, pidfile, socket, bridge): a runner."""
    return start_dockerd(images, prefix="maci-bench-d2-", bridge_prefix="mbench")


def seed_registry(registry: str, log_dir: Path) -> float:
    """Push the base images once to `registry` (repo bench/base): afterwards every push of an
    image built on them mounts those layers instead of re-uploading them, as it would to any
    registry the team already uses. Returns the seconds it took (reported, not a sample)."""
    started = time.perf_counter()
    procs = []
    for arch, image in BASES.items():
        tag = f"{registry}/bench/base:{arch}"
        subprocess.run(["docker", "tag", image, tag], check=True, capture_output=True)
        log = (log_dir / f"seed-{arch}.log").open("wb")
        procs.append((tag, subprocess.Popen(["docker", "push", tag], stdout=log,
                                            stderr=subprocess.STDOUT)))
    for tag, proc in procs:
        if proc.wait(600) != 0:
            raise RuntimeError(f"seeding {tag} failed (see {log_dir})")
        subprocess.run(["docker", "rmi", "--no-prune", tag], capture_output=True)
    return round(time.perf_counter() - started, 3)
