"""The engine port: what the orchestrator needs from any engine, and nothing more."""

from __future__ import annotations

from typing import Protocol

from ci.results import JobSpec, PlatformResult


class Engine(Protocol):
    """Runs one platform job on its placed runner.

    `run_job` returns a failed `PlatformResult` when tests or a build fail (that is data
    for the verdict) and raises `ci.errors.CIError` only when the engine itself is broken
    or unreachable. It never moves a tag: the image is pushed by digest only.
    """

    name: str

    async def run_job(self, spec: JobSpec) -> PlatformResult: ...
