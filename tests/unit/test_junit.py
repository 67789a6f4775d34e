"""ci.core.junit: JUnit XML → TestSummary; tolerant, and a broken report after a failure is a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.core.junit import JUnitError, parse, summarize

PYTEST = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5" time="1.234"
 timestamp="2026-01-01T00:00:00" hostname="h">
<testcase classname="tests.test_app" name="test_ok" time="0.001" />
<testcase classname="tests.test_app" name="test_ok2" time="0.001" />
<testcase classname="tests.test_app" name="test_bad" time="0.002">
  <failure message="assert False">trace</failure></testcase>
<testcase classname="tests.test_app" name="test_skip" time="0"><skipped message="no" /></testcase>
<testcase classname="tests.test_app" name="test_err" time="0"><error message="boom" /></testcase>
</testsuite></testsuites>"""


def test_pytest_report_counts_cases() -> None:
    s = parse(PYTEST)
    assert (s.total, s.passed, s.failed, s.errors, s.skipped) == (5, 2, 1, 1, 1)
    assert s.seconds == pytest.approx(1.234)
    assert not s.ok


def test_bare_testsuite_root_and_attribute_fallback() -> None:
    s = parse('<testsuite tests="4" failures="0" errors="0" skipped="1" time="2"/>')
    assert (s.total, s.passed, s.skipped, s.ok) == (4, 3, 1, True)


def test_nested_suites_are_counted_once() -> None:
    xml = ("<testsuites><testsuite name='a' time='1'><testcase name='x'/></testsuite>"
           "<testsuite name='b' time='2'><testsuite name='c' time='2'><testcase name='y'>"
           "<failure/></testcase></testsuite></testsuite></testsuites>")
    s = parse(xml)
    assert (s.total, s.passed, s.failed) == (2, 1, 1)
    assert s.seconds == 3


@pytest.mark.parametrize("text", ["", "not xml <", "<html><body/></html>"])
def test_garbage_raises_junit_error(text: str) -> None:
    with pytest.raises(JUnitError):
        parse(text)


def test_missing_report_after_failed_run_is_one_error(tmp_path: Path) -> None:
    s = summarize(tmp_path / "nope.xml", 2, seconds=3.5, log_path="log.txt")
    assert (s.errors, s.ok, s.seconds, s.junit_path, s.log_path) == (1, False, 3.5, None, "log.txt")


def test_garbled_report_after_failed_run_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "junit.xml"
    bad.write_bytes(b"<testsuites><testsuite")
    assert summarize(bad, 1).ok is False


def test_missing_report_after_passing_run_is_not_a_failure(tmp_path: Path) -> None:
    assert summarize(tmp_path / "nope.xml", 0).ok is True


def test_nonzero_exit_with_clean_report_still_fails(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text('<testsuite tests="0" failures="0" errors="0"/>')  # pytest exit 5
    s = summarize(report, 5)
    assert s.errors == 1 and not s.ok and s.junit_path == str(report)


def test_report_is_kept_with_its_path(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(PYTEST)
    s = summarize(report, 1, seconds=9.0)
    assert s.junit_path == str(report) and s.failed == 1 and s.seconds == pytest.approx(1.234)
