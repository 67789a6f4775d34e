"""The benchmark's own stack: a registry on a free port, a counting proxy, a second dockerd.

The harness never touches the user's 127.0.0.1:5000 registry, examples/wine/.maci or the
default daemon's containers: every server here is started on a free loopback port (or its
own socket), recorded by pid and stopped by that pid.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BASES = {"amd64": "maci/python:bookworm-amd64", "arm64": "maci/python:bookworm-arm64"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline, pause = time.monotonic() + timeout, 0.05
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not ready yet, whatever the reason
            pass
        time.sleep(pause)
        pause = min(pause * 1.5, 0.5)
    raise TimeoutError(f"{what} not ready after {timeout:g} s")


@dataclass
class Server:
    """A process started in its own session; `stop()` signals that recorded pid's group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start(name: str, cmd: list[str], log_dir: Path, ready: Callable[[], bool], timeout: float,
          env: dict[str, str] | None = None) -> Server:
    log = log_dir / f"{name}.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    server = Server(name, proc, log)
    try:
        wait_until(lambda: proc.poll() is None and ready(), timeout, name)
    except TimeoutError:
        server.stop()
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name} did not start:\n{tail}") from None
    return server


# ------------------------------------------------------------------ registry


def start_registry(folder: Path) -> tuple[Server, int]:
    """`docker-registry serve` (distribution 2.8) with deletes enabled, on a free port."""
    exe = shutil.which("docker-registry")
    if exe is None:
        raise RuntimeError("docker-registry is not installed (run scripts/setup-stack.sh)")
    port = free_port()
    (folder / "data").mkdir(parents=True, exist_ok=True)
    cfg = folder / "config.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                   f"    rootdirectory: {folder / 'data'}\n  delete:\n    enabled: true\n"
                   f"http:\n  addr: 127.0.0.1:{port}\n")

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
            return bool(r.status == 200)

    return start("registry", [exe, "serve", str(cfg)], folder, ready, 20), port


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

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _forward(self) -> None:
            body = self._body()
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


@dataclass
class SecondDaemon:
    """A second Docker daemon (own data-root, exec-root, pidfile, socket, bridge): a runner."""

    server: Server
    root: Path
    bridge: str

    @property
    def host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def stop(self) -> None:
        self.server.stop(timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _free_subnet() -> str:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for n in range(150, 200):
        if f"172.30.{n}." not in routes:
            return f"172.30.{n}"
    raise RuntimeError("no free 172.30.x.0/24 subnet for the second daemon's bridge")


def start_second_daemon(images: list[str]) -> SecondDaemon:
    """Start it and copy `images` into it with `docker save | docker load`."""
    exe = shutil.which("dockerd")
    if exe is None or os.geteuid() != 0:
        raise RuntimeError("a second dockerd needs root and the dockerd binary")
    root = Path(tempfile.mkdtemp(prefix="maci-bench-d2-", dir="/tmp"))
    bridge = f"mbench{os.getpid() % 100000}"
    subnet = _free_subnet()
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    sock = root / "docker.sock"
    env = {k: v for k, v in os.environ.items() if k not in {"DOCKER_HOST", "NOTIFY_SOCKET"}}

    def ready() -> bool:
        return subprocess.run(["docker", "-H", f"unix://{sock}", "info", "--format",
                               "{{.ServerVersion}}"], capture_output=True,
                              timeout=5).returncode == 0

    try:
        server = start("dockerd-2", [
            exe, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "docker.pid"), "-H", f"unix://{sock}", "-b", bridge,
            "--iptables=false", "--ip-masq=false"], root, ready, 60, env)
    except Exception:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        raise
    daemon = SecondDaemon(server, root, bridge)
    if not images:
        return daemon
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "-H", daemon.host, "load", "-q"], stdin=save.stdout,
                          capture_output=True, text=True, timeout=600)
    assert save.stdout is not None
    save.stdout.close()
    if save.wait(60) != 0 or load.returncode != 0:
        daemon.stop()
        raise RuntimeError(f"could not copy {images} into the second daemon: {load.stderr}")
    return daemon


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
