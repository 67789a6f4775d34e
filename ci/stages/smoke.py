"""Smoke/stress test of one platform's serving image, run by digest before any tag moves (adapter).

The image runs on that platform's runner (natively or under qemu), we wait for its health
endpoint, send N prediction requests with bounded concurrency and compare the error rate and
p95 latency with the config's bounds (emulated placements get their own, looser bound).
A failure is data: a `SmokeResult` with `passed=False` and the reason; nothing here raises
for a failed smoke test, and the container is always removed.

Where the published port is reached: a local daemon (no DOCKER_HOST, unix:// or npipe://)
publishes on 127.0.0.1 and we connect there; for tcp://H:p or ssh://[user@]H the port is on
the runner's host H, so we connect to H and publish on all its interfaces (0.0.0.0) unless H
is a loopback address, in which case 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import math
import os
import secrets
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import anyio
import httpx

from ci.adapters import proc
from ci.adapters.inventory import docker_env
from ci.core.config import SmokeConfig
from ci.core.errors import CIError
from ci.core.redact import redact
from ci.core.verdict import SmokeResult

PlacementKind = Literal["native", "emulated", "unavailable"]
PULL_TIMEOUT = 900.0
DOCKER_TIMEOUT = 60.0
LOG_LINES = 15
LOG_CHARS = 1200
STATE_CHECK_EVERY = 1.0


@dataclass(frozen=True)
class Endpoint:
    """Where a published container port is bound on the runner and where we connect to it."""

    bind: str
    connect: str


def endpoint_for(docker_host: str) -> Endpoint:
    """The bind address for `docker run -p` and the address we connect to, from DOCKER_HOST."""
    if not docker_host or docker_host.startswith(("unix://", "npipe://", "fd://")):
        return Endpoint("127.0.0.1", "127.0.0.1")
    host = urlsplit(docker_host).hostname or "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return Endpoint("127.0.0.1", "127.0.0.1" if host == "localhost" else host)
    return Endpoint("0.0.0.0", host)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was actually measured."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def bound_for(placement: PlacementKind, config: SmokeConfig) -> float:
    return config.p95_ms_emulated if placement == "emulated" else config.p95_ms


def evaluate(
    *,
    platform: str,
    placement: PlacementKind,
    reference: str,
    config: SmokeConfig,
    latencies_ms: Sequence[float],
    failures: Mapping[str, int],
    seconds: float,
) -> SmokeResult:
    """Judge one load run (pure): latencies of successful requests, failures counted by kind."""
    errors = sum(failures.values())
    requests = len(latencies_ms) + errors
    error_rate = round(errors / requests, 4) if requests else 1.0
    p95 = round(percentile(latencies_ms, 95), 2)
    bound = bound_for(placement, config)
    reasons: list[str] = []
    if error_rate > config.max_error_rate:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(failures.items()))
        reasons.append(
            f"error rate {error_rate:.1%} > {config.max_error_rate:.1%}"
            f" ({errors}/{requests} failed: {kinds or 'no requests'})"
        )
    if latencies_ms and p95 > bound:
        reasons.append(f"p95 {p95:.1f} ms > {bound:g} ms ({placement} bound)")
    return SmokeResult(
        platform=platform, placement=placement, reference=reference, requests=requests,
        errors=errors, error_rate=error_rate, p50_ms=round(percentile(latencies_ms, 50), 2),
        p95_ms=p95, bound_ms=bound, max_error_rate=config.max_error_rate,
        passed=not reasons, reason=redact("; ".join(reasons)), seconds=round(seconds, 3),
    )


def _failed(
    platform: str, placement: PlacementKind, reference: str, config: SmokeConfig, reason: str,
    seconds: float,
) -> SmokeResult:
    return SmokeResult(
        platform=platform, placement=placement, reference=reference, requests=0, errors=0,
        error_rate=0.0, p50_ms=0.0, p95_ms=0.0, bound_ms=bound_for(placement, config),
        max_error_rate=config.max_error_rate, passed=False, reason=redact(reason),
        seconds=round(seconds, 3),
    )


class _SmokeAbort(Exception):
    """Internal: stop this smoke run with a reason (becomes a failed SmokeResult)."""


class _Docker:
    """The docker CLI pointed at one runner, run in worker threads so the event loop stays free."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    async def __call__(self, *args: str, timeout: float = DOCKER_TIMEOUT) -> proc.Result:
        call = functools.partial(
            proc.run, ["docker", *args], env=self.env, timeout=timeout, check=False,
            step=f"docker {args[0]}",
        )
        return await anyio.to_thread.run_sync(call)

    async def logs_tail(self, container: str) -> str:
        try:
            res = await self("logs", "--tail", str(LOG_LINES), container, timeout=15)
        except CIError:
            return ""
        text = "\n".join(t for t in (res.stdout.strip(), res.stderr.strip()) if t)
        return text[-LOG_CHARS:]


def _why(res: proc.Result) -> str:
    text = res.stderr.strip() or res.stdout.strip()
    return text.splitlines()[-1] if text else f"exit {res.returncode}"


async def _ensure_image(docker: _Docker, reference: str, platform: str) -> None:
    if (await docker("image", "inspect", "--format", "{{.Id}}", reference)).ok:
        return
    res = await docker("pull", "--platform", platform, reference, timeout=PULL_TIMEOUT)
    if not res.ok:
        raise _SmokeAbort(f"cannot pull {reference}: {_why(res)}")


async def _start(docker: _Docker, reference: str, platform: str, config: SmokeConfig,
                 endpoint: Endpoint) -> str:
    name = f"maci-smoke-{platform.replace('/', '-')}-{secrets.token_hex(4)}"
    res = await docker(
        "run", "-d", "--pull", "never", "--platform", platform, "--name", name,
        "--label", "dev.maci.smoke=1", "-p", f"{endpoint.bind}:0:{config.port}", reference,
    )
    if not res.ok:
        # a failed `run` can still leave a created container behind: remove it by name
        await docker("rm", "-f", name, timeout=30)
        raise _SmokeAbort(f"cannot start {reference}: {_why(res)}")
    return res.stdout.strip().splitlines()[-1]


async def _published_port(docker: _Docker, container: str, port: int) -> int:
    res = await docker("port", container, f"{port}/tcp")
    for line in res.stdout.splitlines():
        _, _, num = line.strip().rpartition(":")
        if num.isdigit():
            return int(num)
    raise _SmokeAbort(f"container port {port}/tcp is not published: {_why(res)}")


async def _running(docker: _Docker, container: str) -> tuple[bool, str]:
    res = await docker("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", container)
    running, _, code = res.stdout.strip().partition(" ")
    return running == "true", code


async def _wait_healthy(docker: _Docker, client: httpx.AsyncClient, url: str, container: str,
                        timeout: float) -> None:
    deadline = time.monotonic() + timeout
    next_state_check = time.monotonic() + STATE_CHECK_EVERY
    interval, last = 0.1, "no answer"
    while True:
        try:
            resp = await client.get(url, timeout=min(2.0, max(timeout, 0.1)))
            if resp.is_success:
                return
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        now = time.monotonic()
        if now >= next_state_check:
            next_state_check = now + STATE_CHECK_EVERY
            running, code = await _running(docker, container)
            if not running:
                logs = await docker.logs_tail(container)
                raise _SmokeAbort(f"container exited (code {code}) before {url} was healthy;"
                                  f" last log lines:\n{logs}")
        if now >= deadline:
            logs = await docker.logs_tail(container)
            raise _SmokeAbort(f"{url} not healthy within {timeout:g} s (last: {last});"
                              f" last log lines:\n{logs}")
        await anyio.sleep(min(interval, max(deadline - now, 0.01)))
        interval = min(interval * 1.5, 1.0)


async def _load(client: httpx.AsyncClient, url: str, config: SmokeConfig,
                request_timeout: float) -> tuple[list[float], Counter[str]]:
    """N POSTs; `concurrency` workers share one counter, so at most that many are in flight."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    remaining = config.requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                resp = await client.post(url, json=config.payload, timeout=request_timeout)
                ok, kind = resp.is_success, f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                ok, kind = False, type(exc).__name__
            elapsed = (time.perf_counter() - start) * 1000
            if ok:
                latencies.append(elapsed)
            else:
                failures[kind] += 1

    async with anyio.create_task_group() as tg:
        for _ in range(min(config.concurrency, config.requests)):
            tg.start_soon(worker)
    return latencies, failures


async def smoke(
    *,
    platform: str,
    placement: PlacementKind,
    reference: str,
    config: SmokeConfig,
    host: str = "",
    environ: Mapping[str, str] | None = None,
) -> SmokeResult:
    """Run `reference` (repo@sha256:...) for `platform` on the runner at `host` and load-test it."""
    started = time.monotonic()
    if placement == "unavailable":
        return _failed(platform, placement, reference, config, "platform unavailable", 0.0)
    if "@sha256:" not in reference:
        return _failed(platform, placement, reference, config,
                       f"{reference!r} is not a digest reference (repo@sha256:...)", 0.0)
    docker = _Docker(docker_env(host, os.environ if environ is None else environ))
    endpoint = endpoint_for(host)
    container = ""
    try:
        await _ensure_image(docker, reference, platform)
        container = await _start(docker, reference, platform, config, endpoint)
        port = await _published_port(docker, container, config.port)
        base = f"http://{_url_host(endpoint.connect)}:{port}"
        request_timeout = max(10.0, 5 * bound_for(placement, config) / 1000)
        limits = httpx.Limits(max_connections=config.concurrency + 1)
        async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
            await _wait_healthy(docker, client, base + config.health_path, container,
                                config.startup_timeout_seconds)
            latencies, failures = await _load(client, base + config.predict_path, config,
                                              request_timeout)
    except _SmokeAbort as exc:
        return _failed(platform, placement, reference, config, str(exc),
                       time.monotonic() - started)
    except CIError as exc:
        return _failed(platform, placement, reference, config, exc.message,
                       time.monotonic() - started)
    finally:
        if container:
            with anyio.CancelScope(shield=True), contextlib.suppress(CIError):
                await docker("rm", "-f", container, timeout=30)
    return evaluate(platform=platform, placement=placement, reference=reference, config=config,
                    latencies_ms=latencies, failures=failures,
                    seconds=time.monotonic() - started)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run_smoke(
    *,
    platform: str,
    placement: PlacementKind,
    reference: str,
    config: SmokeConfig,
    host: str = "",
    environ: Mapping[str, str] | None = None,
) -> SmokeResult:
    """Synchronous wrapper around `smoke` (for callers outside an event loop)."""
    return anyio.run(functools.partial(
        smoke, platform=platform, placement=placement, reference=reference, config=config,
        host=host, environ=environ,
    ))
