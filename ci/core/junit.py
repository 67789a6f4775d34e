"""JUnit XML → `TestSummary` (pure). Tolerant of pytest's format and of nested suites.

A missing or garbled report never crashes the pipeline: the test command's exit code
decides, and a failed run without a readable report counts as one error.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ci.core.errors import JUnitError as JUnitError  # defined in the error tree; re-exported here
from ci.core.results import TestSummary


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


def _int(value: str | None) -> int:
    try:
        return int(float(value or 0))
    except ValueError:
        return 0


def parse(text: str) -> TestSummary:
    """Count test cases by outcome; falls back to suite attributes when there are none."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise JUnitError(f"not XML: {exc}") from None
    if root.tag not in {"testsuites", "testsuite"}:
        raise JUnitError(f"root element is <{root.tag}>, not <testsuites>/<testsuite>")
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    cases = list(root.iter("testcase"))
    if cases:
        failed = errors = skipped = 0
        for case in cases:
            kinds = {child.tag for child in case}
            if "error" in kinds:
                errors += 1
            elif "failure" in kinds:
                failed += 1
            elif "skipped" in kinds:
                skipped += 1
        total = len(cases)
    else:
        total = sum(_int(s.get("tests")) for s in suites)
        failed = sum(_int(s.get("failures")) for s in suites)
        errors = sum(_int(s.get("errors")) for s in suites)
        skipped = sum(_int(s.get("skipped")) for s in suites)
    leaf = [s for s in suites if s.find("testsuite") is None] or suites
    seconds = _float(root.get("time")) or sum(_float(s.get("time")) for s in leaf)
    return TestSummary(
        total=total,
        passed=max(total - failed - errors - skipped, 0),
        failed=failed,
        errors=errors,
        skipped=skipped,
        seconds=round(seconds, 3),
    )


def summarize(
    path: Path | None,
    exit_code: int,
    *,
    seconds: float = 0.0,
    log_path: str | None = None,
) -> TestSummary:
    """The summary of a finished test command: its report if readable, its exit code always.

    A non-zero exit with a report that shows no failure (pytest exit 5: nothing collected,
    a crash after the report) is counted as one error, so `ok` follows the exit code.
    """
    summary: TestSummary | None = None
    if path is not None:
        try:
            summary = parse(path.read_text(errors="replace"))
        except (OSError, JUnitError):
            summary = None
    junit = str(path) if summary is not None and path is not None else None
    if summary is None:
        bad = 0 if exit_code == 0 else 1
        return TestSummary(errors=bad, seconds=round(seconds, 3), log_path=log_path)
    if exit_code != 0 and summary.ok:
        summary = summary.model_copy(update={"errors": summary.errors + 1})
    return summary.model_copy(update={
        "junit_path": junit,
        "log_path": log_path,
        "seconds": summary.seconds or round(seconds, 3),
    })
