"""Stages hello's pipelines share; a pipeline imports them as `from pipelines.common import ...`."""

from __future__ import annotations

from collections.abc import Sequence

from ci import CIError, Release, Verdict


def test_and_build(run: Release) -> None:
    """Plan, then every platform's job: its tests in the `test` stage, then the `runtime`
    build pushed BY DIGEST (no tag, no index: nothing a user pulls), then smoke if configured."""
    run.plan()
    run.platform_jobs()
    run.smoke()


def stop_unless_passed(run: Release, verdict: Verdict) -> None:
    """A rejected verdict ends the run here: GateFailed "release rejected, nothing
    published: <first reason>" (exit 1). `run.publish()` would refuse it the same way."""
    if not verdict.passed:
        run.notify()
        run.permit()


def publish(run: Release, tags: Sequence[str] | None = None) -> None:
    """Assemble the index and move `tags` (default: [tool.ci.publish] tags) all together;
    a failure is recorded in the run's outcome and notified before it propagates."""
    try:
        run.preflight_deploy()
        run.publish(tags=tags)
    except CIError as exc:
        run.failure = exc.message
        run.notify(error=exc.message)
        raise
