"""The release pipeline: the ONE place the release order lives.

    plan → up-to-date check → [model stage (train/reuse + gate + register) ‖ platform jobs
    (test, then build + push by digest once the model is registered; native or emulated, in
    parallel)] → smoke per platform → verdict →
    deploy preflight → publish (index + tags) → deploy (GitOps commit) → promote (alias) →
    notify

Nothing user-visible moves before the verdict passed and the deploy preflight accepted the
release. The release image builds wait for the model stage because the serving image embeds
the exact registered model version; tests run meanwhile.

Run it as `ci run release` (or just `ci run`), or under Dagger as
`dagger run python -m pipelines.release` (the Dagger session in the environment is used).
"""

from __future__ import annotations

import sys

from ci.errors import CIError, GateFailed
from ci.orchestrator import ReleaseRun


def pipeline(run: ReleaseRun) -> int:
    """Run every stage in order; returns the exit code (0 released, 1 rejected/failed)."""
    run.plan()
    if run.check_up_to_date():  # same inputs as the last release, still in place
        return 0
    run.model_and_platform_jobs()  # train + gate beside the tests; release builds wait for it
    run.smoke()
    verdict = run.decide()
    if not verdict.passed:
        run.notify()
        first = verdict.reasons[0] if verdict.reasons else "a gate failed"
        more = f" (+{len(verdict.reasons) - 1} more reasons in the verdict)" \
            if len(verdict.reasons) > 1 else ""
        raise GateFailed(f"release rejected, nothing published: {first}{more}")
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


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.release [ci run options]` — same as `ci run release`."""
    from ci.cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["run", "release", *args])


if __name__ == "__main__":
    sys.exit(main())
