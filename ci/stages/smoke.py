"""Smoke/stress test of one platform's serving image, run by digest before any tag moves (adapter).

The image runs on that platform's runner (natively or under qemu), we wait for its health
endpoint, send N prediction requests with bounded concurrency and compare the error rate and
p95 latency with the config's bounds (emulated placements get their own, looser bound).
A failure is data: a `SmokeResult` with `passed=False` and the reason; nothing here raises
for a failed smoke test, and the container is always removed.

The health wait, the load and the judgement are `ci.adapters.smoke_client`, shared with the
Dagger engine (which runs the image as a Dagger service tunnelled to this host, in the
session that built it, and carries the result in its PlatformResult).

Where the published port is reached: a local daemon (no DOCKER_HOST, unix:// or npipe://)
publishes on 127.0.0.1 and we connect there; for tcp://H:p or ssh://[user@]H the port is on
the runner's host H, so we connect to H and publish on all its interfaces (0.0.0.0) unless H
is a loopback address, in which case 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

from ci.adapters import proc
from ci.adapters.engines import docker_containers
from ci.adapters.inventory import docker_env
from ci.adapters.smoke_client import (
    PlacementKind,
    bound_for,
    evaluate,
    failed,
    measure,
    percentile,
    refusal,
)
from ci.core.config import SmokeConfig
from ci.core.errors import CIError
from ci.core.verdict import SmokeResult

__all__ = ["Endpoint", "PlacementKind", "bound_for", "endpoint_for", "evaluate", "percentile",
           "run_smoke", "smoke", "unsupported_reason"]
PULL_TIMEOUT = 900.0
DOCKER_TIMEOUT = 60.0
LOG_LINES = 15
LOG_CHARS = 1200


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
        "--label", "dev.maci.smoke=1", *docker_containers.label_args("smoke"),
        "-p", f"{endpoint.bind}:0:{config.port}", reference,
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
    refused = refusal(platform, placement, reference, config)
    if refused is not None:
        return refused
    docker = _Docker(docker_env(host, os.environ if environ is None else environ))
    endpoint = endpoint_for(host)
    container = base = ""

    async def stopped() -> str:
        running, code = await _running(docker, container)
        if running:
            return ""
        logs = await docker.logs_tail(container)
        return (f"container exited (code {code}) before {base}{config.health_path} was healthy;"
                f" last log lines:\n{logs}")

    async def details() -> str:
        return f"; last log lines:\n{await docker.logs_tail(container)}"

    try:
        await _ensure_image(docker, reference, platform)
        container = await _start(docker, reference, platform, config, endpoint)
        port = await _published_port(docker, container, config.port)
        base = f"http://{_url_host(endpoint.connect)}:{port}"
        return await measure(base, platform=platform, placement=placement, reference=reference,
                             config=config, started=started, stopped=stopped, details=details)
    except _SmokeAbort as exc:
        return failed(platform, placement, reference, config, str(exc),
                      time.monotonic() - started)
    except CIError as exc:
        return failed(platform, placement, reference, config, exc.message,
                      time.monotonic() - started)
    finally:
        if container:
            with anyio.CancelScope(shield=True), contextlib.suppress(CIError):
                await docker("rm", "-f", container, timeout=30)


def unsupported_reason(engine: str) -> str:
    """Why a configured smoke gate fails on an engine that cannot run the serving image: the
    verdict carries it, so the gate is never skipped silently."""
    return (f"[smoke] is configured but the {engine} engine cannot run the serving image; "
            "run with --engine docker or --engine dagger, or remove [smoke]")


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
