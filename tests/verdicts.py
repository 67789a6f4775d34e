"""Test helper: a verdict (and its Permit) from platform results, through the real `decide()`.

Publishing takes a Permit, which only `decide()` mints; tests of the registry writes get
theirs the same way a release does, so no test can publish what the gates did not weigh.
"""

from __future__ import annotations

from collections.abc import Sequence

from ci.core.results import PlatformResult, SourceInfo
from ci.core.verdict import Permit, Verdict, decide


def verdict_for(results: Sequence[PlatformResult], expected: Sequence[str],
                image: str) -> Verdict:
    first = results[0] if results else None
    return decide(
        run_id=first.run_id if first else "", project=first.project if first else "app",
        image=image, created="2026-01-01T00:00:00Z",
        source=first.source if first else SourceInfo(), expected_platforms=list(expected),
        platforms=list(results), model=None, model_required=False, smoke=[],
        smoke_required=False, emulation_budget_seconds=None,
    )


def permit_for(results: Sequence[PlatformResult], expected: Sequence[str], image: str) -> Permit:
    """The Permit of the verdict of `results`; GateFailed (nothing written) if rejected."""
    return verdict_for(results, expected, image).permit()
