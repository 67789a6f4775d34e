"""hello's nightly image: every platform tested and built, published as `nightly-YYYYMMDD`
and `nightly` (one index holding all platforms).

Image-only: the verdict needs no model gate (`require_model=False`, even if the config had
a [model]); the configured release tags (`sha-*`, the branch, `latest`) do not move; no deploy.

    ci run nightly                   # from this folder, or with -c path/to/pyproject.toml
    python -m pipelines.nightly      # the same run, this file as the entry point
"""

from __future__ import annotations

from ci import Release, main
from pipelines.common import publish, stop_unless_passed, test_and_build


def nightly_tags(run: Release) -> list[str]:
    """The date comes from the run's clock (UTC), so a test can pin it."""
    return [f"nightly-{run.clock():%Y%m%d}", "nightly"]


def pipeline(run: Release) -> int:
    test_and_build(run)
    verdict = run.decide(require_model=False)
    stop_unless_passed(run, verdict)
    publish(run, tags=nightly_tags(run))
    run.notify()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(pipeline))
