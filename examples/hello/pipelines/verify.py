"""hello's pre-merge check: tests and builds on every platform, then the verdict; stops there.

Publishes nothing: no index, no tag moves (each platform's image is pushed by digest only,
as every platform job does). Exit 0 when every gate passed, 1 when not.

    ci run verify
    python -m pipelines.verify --json
"""

from __future__ import annotations

import sys

from ci import Release, main
from pipelines.common import test_and_build


def pipeline(run: Release) -> int:
    test_and_build(run)
    verdict = run.decide(require_model=False)
    platforms = ", ".join(verdict.expected_platforms)
    if verdict.passed:
        sys.stderr.write(f"verify: passed on {platforms}; nothing published\n")
        return 0
    sys.stderr.write(f"verify: FAILED on {platforms}: {'; '.join(verdict.reasons)}\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(main(pipeline))
