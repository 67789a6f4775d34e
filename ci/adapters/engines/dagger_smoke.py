"""Smoke under Dagger: a platform's published image, by digest, as a service tunnelled here.

The smoke must run where the image was built and on the engine the plan placed it on
(natively, or under that engine's qemu), so it runs in the same session as the platform job:
`dag.container(platform=P).from_(repo@sha256:…)` (the digest the publish will merge, pulled
back from the registry, not the build's cache) `.with_exposed_port(port).as_service()`, and
`dag.host().tunnel(service)` forwards a port of THIS host (where the session's client runs)
to it. From there the smoke client and its limits are the Docker path's
(`ci.adapters.smoke_client`): health wait, N requests with bounded concurrency, error rate
and the p95 bound of the placement. Every outcome is a `SmokeResult` — an engine error is a
failed smoke with its reason, never a skip — and the tunnel and the service are always
stopped, even on cancel.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ci.adapters.smoke_client import (
    PlacementKind,
    failed,
    measure,
    refusal,
    request_timeout,
)
from ci.core.config import SmokeConfig
from ci.core.redact import redact
from ci.core.verdict import SmokeResult

if TYPE_CHECKING:
    import dagger

PULL_TIMEOUT = 900.0  # the Docker path's bound on pulling the image back by digest
STOP_TIMEOUT = 30.0
Prepare = Callable[["dagger.Container"], "dagger.Container"]


class _SmokeAbort(Exception):
    """Internal: stop this smoke run with a reason (becomes a failed SmokeResult)."""


def budget(config: SmokeConfig) -> float:
    """An upper bound of one smoke run's seconds (pull, start, health wait, every request
    timing out), for the deadline of the child process that runs it."""
    rounds = math.ceil(config.requests / config.concurrency)
    return PULL_TIMEOUT + 2 * config.startup_timeout_seconds + rounds * request_timeout(
        "emulated", config) + 2 * STOP_TIMEOUT


def _why(exc: Exception) -> str:
    """The line of an SDK error a reader needs: an exec's exit code and last output line."""
    import dagger

    if isinstance(exc, dagger.ExecError):
        text = redact((exc.stderr or "").strip() or (exc.stdout or "").strip() or exc.message)
        return f"exit {exc.exit_code}: {text.splitlines()[-1][:300] if text else ''}"
    lines = redact(str(exc)).strip().splitlines()
    return lines[-1][:300] if lines else type(exc).__name__


async def smoke_service(
    *,
    platform: str,
    placement: PlacementKind,
    reference: str,
    config: SmokeConfig,
    prepare: Prepare | None = None,
) -> SmokeResult:
    """Run `reference` for `platform` as a Dagger service on the connected engine and
    load-test it through a host tunnel; `prepare` adds what the pull needs (registry auth)."""
    import dagger
    from dagger import dag

    started = time.monotonic()
    refused = refusal(platform, placement, reference, config)
    if refused is not None:
        return refused
    ctr = dag.container(platform=dagger.Platform(platform))
    image = (prepare(ctr) if prepare else ctr).from_(reference)
    service = image.with_exposed_port(config.port).as_service(use_entrypoint=True)
    tunnel: dagger.Service | None = None
    pulled = False
    try:
        try:
            with anyio.fail_after(PULL_TIMEOUT):
                await image.sync()
        except TimeoutError:
            raise _SmokeAbort(f"cannot pull {reference}: no image within {PULL_TIMEOUT:g} s"
                             ) from None
        except dagger.DaggerError as exc:
            raise _SmokeAbort(f"cannot pull {reference}: {_why(exc)}") from None
        pulled = True
        forward = dag.host().tunnel(service, ports=[dagger.PortForward(backend=config.port)])
        try:
            with anyio.fail_after(config.startup_timeout_seconds):
                tunnel = await forward.start()
                base = (await tunnel.endpoint(scheme="http")).rstrip("/")
        except TimeoutError:
            raise _SmokeAbort(f"cannot start {reference} as a service: port {config.port} not "
                             f"up within {config.startup_timeout_seconds:g} s") from None
        except dagger.DaggerError as exc:
            raise _SmokeAbort(f"cannot start {reference} as a service: {_why(exc)}") from None
        return await measure(base, platform=platform, placement=placement, reference=reference,
                             config=config, started=started)
    except _SmokeAbort as exc:
        return failed(platform, placement, reference, config, str(exc),
                      time.monotonic() - started)
    finally:
        with anyio.CancelScope(shield=True):
            await _stop([s for s in (tunnel, service if pulled else None) if s is not None])


async def _stop(services: list[dagger.Service]) -> None:
    """The tunnel first (nothing new reaches the service), then the service; a stop that
    fails leaves at most a service that ends with the session."""
    import dagger

    for svc in services:
        with contextlib.suppress(dagger.DaggerError, TimeoutError), \
                anyio.fail_after(STOP_TIMEOUT):
            await svc.stop()
