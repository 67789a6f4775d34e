"""The built-in image-only pipeline: test, build and publish every platform; no model stage.

For services without a model, or a nightly image of one that has: the verdict does not
require a model gate (even when the config has a [model]), and no alias moves. Smoke runs
when [smoke] is configured; deploy runs when [deploy] is.
"""

from __future__ import annotations

from ci.pipelines.handle import Release
from ci.pipelines.release import finish


def pipeline(run: Release) -> int:
    run.plan()
    run.check_publishable()  # `-p` subsets are built by `ci build --no-publish`, never released
    run.platform_jobs()
    run.smoke()
    return finish(run, require_model=False)
