"""`ci smoke --url URL`: the smoke/stress stage against a service that already runs (a canary
pod in the cluster, a preview Service), with the same client and [smoke] bounds as a release."""

from __future__ import annotations

import functools
import re
import time
from pathlib import Path

import anyio

from ci.adapters.smoke_client import measure
from ci.core.config import Config
from ci.core.errors import UsageError
from ci.core.redact import redact
from ci.core.results import SmokeResult

_URL = re.compile(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")


def base_url(url: str) -> str:
    """The service's base URL (health/predict paths are appended to it); bad input exits 2."""
    if not _URL.match(url):
        raise UsageError(f"--url: {url!r} is not an http(s)://host[:port][/prefix] URL")
    return url.rstrip("/")


def run_url_smoke(config: Config, url: str, *, reference: str = "",
                  output: Path | None = None) -> SmokeResult:
    """Health wait, then the load, judged by the config's native bounds (a cluster node runs
    the image natively); a server that never got healthy is a failed result, not an error.
    `output` gets the result JSON (a workflow step's artifact) whether it passed or not."""
    if config.smoke is None:
        raise UsageError("smoke: the config has no [smoke] section (its requests, concurrency "
                         "and p95 bounds are what this gate checks)")
    base = base_url(url)
    result = anyio.run(functools.partial(
        measure, base, platform="", placement="native", reference=reference or base,
        config=config.smoke, started=time.monotonic()))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(result.model_dump_json(indent=2) + "\n")
    return result


def summary(result: SmokeResult) -> str:
    """One line: what was measured against which bound, and why it failed if it did."""
    verdict = "passed" if result.passed else f"FAILED: {result.reason}"
    return redact(f"smoke {result.reference}: {verdict} (p95 {result.p95_ms:.1f} ms, bound "
                  f"{result.bound_ms:g} ms; {result.requests} requests, {result.errors} errors, "
                  f"{result.seconds:.1f} s)")
