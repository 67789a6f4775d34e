"""`ci build`: every platform job of the plan in-process, then the verdict (the same
`decide()` as `ci run`) and, with its Permit, the shared publish path."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from ci.adapters.state_dir import check_state_dir
from ci.core.config import Config
from ci.core.outcome import PublishResult
from ci.core.platforms import Platform
from ci.core.results import PlatformResult
from ci.stages.fanout import execute
from ci.stages.prepare import Prepared, prepare
from ci.stages.publish import check_publishable, decide_results, publish_release
from ci.stages.real import registry_for, tag_guard_for
from ci.stages.sign import signer


def run_jobs(
    config: Config,
    *,
    only: list[Platform] | None = None,
    push: bool = True,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
) -> tuple[Prepared, list[PlatformResult]]:
    """`ci build`'s first half: every planned platform job, pushed by digest unless `push`
    is off. Publishing is the second step (`publish_jobs`), so a refused or failed publish
    can still report every job's result."""
    check_state_dir(config.state_path)
    check_publishable(config, [str(p) for p in only] if only else None, push)
    env = dict(os.environ if environ is None else environ)
    prepared = prepare(config, only=only, environ=env)
    return prepared, execute(prepared, config, push=push, environ=env, on_result=on_result)


def publish_jobs(config: Config, prepared: Prepared, results: list[PlatformResult], *,
                 environ: Mapping[str, str] | None = None) -> PublishResult:
    """Verdict from the results; GateFailed (nothing written) unless it passed, else publish."""
    permit = decide_results(config, results, expected=prepared.expected).permit()
    env = dict(os.environ if environ is None else environ)
    sign = signer(config, permit.verdict, env)  # [sign]: the index, before any tag moves
    client = registry_for(config, env)
    try:
        return publish_release(permit, config, client, before_tags=sign,
                               guard=tag_guard_for(config, permit.verdict.source.sha, env))
    finally:
        client.close()
