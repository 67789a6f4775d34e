"""The smoke client: health wait, the load and the judgement, against a URL already reachable.

Every engine that can run a serving image gets it reachable from here in its own way (the
Docker engine publishes a port on the runner, the Dagger engine tunnels its service to this
host); from then on they share this one client and its limits, so a verdict weighs the same
measurement whichever engine ran the image. It lives in adapters because it does network
I/O and the Dagger engine (an adapter) needs it; `ci.stages.smoke` re-exports it.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal

import anyio
import httpx

from ci.core.config import SmokeConfig
from ci.core.redact import redact
from ci.core.verdict import SmokeResult

PlacementKind = Literal["native", "emulated", "unavailable"]
STATE_CHECK_EVERY = 1.0
Probe = Callable[[], Awaitable[str]]  # "" while all is well, else why to stop (or a suffix)

__all__ = ["STATE_CHECK_EVERY", "PlacementKind", "Probe", "bound_for", "evaluate", "failed",
           "load", "measure", "percentile", "refusal", "request_timeout", "wait_healthy"]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was actually measured."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def bound_for(placement: PlacementKind, config: SmokeConfig) -> float:
    """Emulated placements get their own, looser p95 bound: qemu is slower, not broken."""
    return config.p95_ms_emulated if placement == "emulated" else config.p95_ms


def request_timeout(placement: PlacementKind, config: SmokeConfig) -> float:
    """Long enough that a slow answer is measured as slow (p95) rather than counted as an
    error, short enough that a hung server cannot stall the release."""
    return max(10.0, 5 * bound_for(placement, config) / 1000)


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


def failed(
    platform: str, placement: PlacementKind, reference: str, config: SmokeConfig, reason: str,
    seconds: float,
) -> SmokeResult:
    """A smoke run that never got to the load (no image, no start, never healthy)."""
    return SmokeResult(
        platform=platform, placement=placement, reference=reference, requests=0, errors=0,
        error_rate=0.0, p50_ms=0.0, p95_ms=0.0, bound_ms=bound_for(placement, config),
        max_error_rate=config.max_error_rate, passed=False, reason=redact(reason),
        seconds=round(seconds, 3),
    )


def refusal(platform: str, placement: PlacementKind, reference: str,
            config: SmokeConfig) -> SmokeResult | None:
    """What no engine may run: an unavailable platform, or an image not named by digest (a
    tag could move between the smoke and the publish, so the smoke would prove nothing)."""
    if placement == "unavailable":
        return failed(platform, placement, reference, config, "platform unavailable", 0.0)
    if "@sha256:" not in reference:
        return failed(platform, placement, reference, config,
                      f"{reference!r} is not a digest reference (repo@sha256:...)", 0.0)
    return None


async def wait_healthy(client: httpx.AsyncClient, url: str, timeout: float, *,
                       stopped: Probe | None = None, details: Probe | None = None) -> str:
    """Poll `url` until it answers 2xx (""), else why it never did, after `timeout` at most.

    `stopped` (asked every STATE_CHECK_EVERY s) says why the server is gone, so a crashed
    container fails at once instead of after the whole timeout; `details` adds what the
    engine knows (a container's last log lines) to the timeout's reason.
    """
    deadline = time.monotonic() + timeout
    next_state_check = time.monotonic() + STATE_CHECK_EVERY
    interval, last = 0.1, "no answer"
    while True:
        try:
            resp = await client.get(url, timeout=min(2.0, max(timeout, 0.1)))
            if resp.is_success:
                return ""
            last = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        now = time.monotonic()
        if stopped is not None and now >= next_state_check:
            next_state_check = now + STATE_CHECK_EVERY
            gone = await stopped()
            if gone:
                return gone
        if now >= deadline:
            extra = await details() if details is not None else ""
            return f"{url} not healthy within {timeout:g} s (last: {last}){extra}"
        await anyio.sleep(min(interval, max(deadline - now, 0.01)))
        interval = min(interval * 1.5, 1.0)


async def load(client: httpx.AsyncClient, url: str, config: SmokeConfig,
               timeout: float) -> tuple[list[float], Counter[str]]:
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
                resp = await client.post(url, json=config.payload, timeout=timeout)
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


async def measure(
    base: str,
    *,
    platform: str,
    placement: PlacementKind,
    reference: str,
    config: SmokeConfig,
    started: float,
    stopped: Probe | None = None,
    details: Probe | None = None,
) -> SmokeResult:
    """Health wait then the load on `base` (http://host:port), judged by `evaluate`; a
    server that never got healthy is a failed result with the reason. The caller owns the
    server (and stops it)."""
    limits = httpx.Limits(max_connections=config.concurrency + 1)
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        unhealthy = await wait_healthy(client, base + config.health_path,
                                       config.startup_timeout_seconds, stopped=stopped,
                                       details=details)
        if unhealthy:
            return failed(platform, placement, reference, config, unhealthy,
                          time.monotonic() - started)
        latencies, failures = await load(client, base + config.predict_path, config,
                                         request_timeout(placement, config))
    return evaluate(platform=platform, placement=placement, reference=reference, config=config,
                    latencies_ms=latencies, failures=failures,
                    seconds=time.monotonic() - started)
