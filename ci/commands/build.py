"""`ci build`: every platform job of the plan in-process, then the shared publish path."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from ci.core.config import Config
from ci.core.platforms import Platform
from ci.core.results import PlatformResult
from ci.stages.fanout import execute
from ci.stages.prepare import Prepared, prepare


def run_jobs(
    config: Config,
    *,
    only: list[Platform] | None = None,
    push: bool = True,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
) -> tuple[Prepared, list[PlatformResult]]:
    """`ci build`'s first half: every planned platform job, pushed by digest unless `push`
    is off. Publishing is the second step (a verdict, then `publish_release`), so a refused
    or failed publish can still report every job's result."""
    env = dict(os.environ if environ is None else environ)
    prepared = prepare(config, only=only, environ=env)
    return prepared, execute(prepared, config, push=push, environ=env, on_result=on_result)
