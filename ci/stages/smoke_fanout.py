"""Smoke tests in parallel across platforms, each started as soon as its image is pushed.

A release should take as long as its slowest platform job plus one smoke test, not the sum
of every platform's smoke. The release handle calls `submit` from each platform job's result
callback (inside `running()`, beside the other jobs); the sync SmokePort runs in a worker
thread, at most `capacity` at once per runner, so a smoke test shares its runner no more
than the platform jobs do. Results are collected in platform order, whatever finished first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from ci.core.errors import CIError
from ci.core.results import PlatformResult
from ci.core.verdict import SmokeResult
from ci.stages.fanout import runner_limiters

SmokeOne = Callable[[PlatformResult], SmokeResult]
Key = tuple[str, str]  # (platform, image reference): a rebuilt image is smoke-tested anew


def _key(result: PlatformResult) -> Key:
    return result.platform, result.reference or ""


def wanted(result: PlatformResult) -> bool:
    """Only a passed platform with an image pushed by digest has something to smoke-test."""
    return result.ok and result.reference is not None


class SmokeFanout:
    """Starts each platform's smoke once, bounded per runner, and keeps what came back."""

    def __init__(self, smoke_one: SmokeOne, *, runner_of: Mapping[str, str],
                 capacity: Mapping[str, int]) -> None:
        self._smoke_one = smoke_one
        self._runner_of = dict(runner_of)  # platform → the runner its smoke runs on
        self._limiter = runner_limiters(capacity)
        self._group: TaskGroup | None = None
        self._started: set[Key] = set()
        self._done: dict[Key, SmokeResult] = {}
        self._errors: dict[Key, CIError] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SmokeFanout]:
        """While open, `submit` starts smoke tests; on exit every started one has finished."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield self
            finally:
                self._group = None

    def submit(self, result: PlatformResult) -> None:
        """Start `result`'s smoke test now (sync: a job's result callback); once per image,
        only for a passed platform, and only inside `running()`."""
        if self._group is None or not wanted(result) or _key(result) in self._started:
            return
        self._started.add(_key(result))
        self._group.start_soon(self._one, result, name=f"smoke {result.platform}")

    async def _one(self, result: PlatformResult) -> None:
        runner = self._runner_of.get(result.platform) or "-"
        try:
            # not abandoned on cancel: the port's cleanup (the container) finishes first
            self._done[_key(result)] = await anyio.to_thread.run_sync(
                self._smoke_one, result, limiter=self._limiter(runner))
        except CIError as exc:  # raised again by `collect`, like a smoke run in line would
            self._errors[_key(result)] = exc

    async def run_missing(self, results: Sequence[PlatformResult]) -> None:
        """Smoke every passed platform that did not get one yet, in parallel the same way."""
        async with self.running():
            for r in results:
                self.submit(r)

    def collect(self, results: Sequence[PlatformResult]) -> list[SmokeResult]:
        """The smoke results in the order of `results` (stable output); the first CIError a
        smoke run raised is raised here."""
        for r in results:
            if _key(r) in self._errors:
                raise self._errors[_key(r)]
        return [self._done[_key(r)] for r in results if _key(r) in self._done]
