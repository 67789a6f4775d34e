"""The built-in release pipeline: the ONE place the release order lives.

    plan → up-to-date check → [model stage (train/reuse + gate + register) ‖ platform jobs
    (test, then build + push by digest once the model is registered; native or emulated, in
    parallel)] → smoke per platform → verdict →
    deploy preflight → publish (index + tags) → deploy (GitOps commit) → promote (alias) →
    notify

Nothing user-visible moves before the verdict passed and the deploy preflight accepted the
release: `publish` takes the verdict's Permit. A project's own `pipelines/release.py`
replaces this one; it may also call `pipeline(run)` from here and add its own stages.
"""

from __future__ import annotations

from ci.core.errors import CIError
from ci.pipelines.handle import Release


def pipeline(run: Release) -> int:
    """Run every stage in order; returns the exit code (0 released, 1 rejected/failed)."""
    run.plan()
    run.check_publishable()  # `-p` subsets are built by `ci build --no-publish`, never released
    if run.check_up_to_date():  # same inputs as the last release, still in place
        return 0
    run.model_and_platform_jobs()  # train + gate beside the tests; release builds wait for it
    run.smoke()
    return finish(run)


def finish(run: Release, *, require_model: bool | None = None) -> int:
    """Verdict, then (only with its Permit) preflight, publish, deploy, promote, record,
    notify. Shared by the built-in pipelines and any user pipeline that wants the same end;
    promote and record do nothing for a run without a model stage or up-to-date check."""
    verdict = run.decide(require_model=require_model)
    if not verdict.passed:
        run.notify()
        run.permit()  # raises GateFailed: "release rejected, nothing published: ..."
    try:
        run.preflight_deploy()
        run.publish()
        run.deploy()
        run.promote()
        run.record_release()
    except CIError as exc:
        run.failure = exc.message
        run.notify(error=exc.message)
        raise
    run.notify()
    return 0

