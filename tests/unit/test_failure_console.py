"""A failed step reads on the console like Docker's own output: the command, its exit code
and the end of stderr — in the progress line and the final summary, secrets masked."""

from __future__ import annotations

import io

from rich.console import Console

from ci.core.redact import register
from ci.core.results import FailureDetail, PlatformResult, SourceInfo
from ci.reports.summary import print_summary
from tests.verdicts import verdict_for

IMAGE = "127.0.0.1:5000/app"


def failed(detail: FailureDetail) -> PlatformResult:
    return PlatformResult(project="app", image=IMAGE, platform="linux/arm64", runner="local",
                          engine="docker", placement="emulated", status="failed", failure=detail,
                          source=SourceInfo(sha="c0ffee"), run_id="r1")


def test_console_lines_show_command_exit_code_and_stderr_tail() -> None:
    detail = FailureDetail(step="test", message="tests failed", command=["pytest", "-q"],
                           exit_code=2, stderr_tail="\n".join(f"line {i}" for i in range(9)))
    assert detail.console_lines() == ["$ pytest -q exited 2", "  line 4", "  line 5",
                                      "  line 6", "  line 7", "  line 8"]


def test_a_step_without_a_command_shows_its_stdout_when_stderr_is_empty() -> None:
    detail = FailureDetail(step="push", message="push failed", stdout_tail="denied")
    assert detail.console_lines() == ["  denied"]


def test_the_summary_names_the_failing_command_with_secrets_masked() -> None:
    secret = "hunter2-s3cr3t"
    register(secret)
    detail = FailureDetail(step="test", message="tests failed on linux/arm64",
                           command=["sh", "-c", "pytest"], exit_code=1,
                           stderr_tail=f"AssertionError: token={secret}")
    verdict = verdict_for([failed(detail)], ["linux/arm64"], IMAGE)
    console = Console(file=io.StringIO(), width=200, record=True)
    print_summary(console, verdict)
    text = console.export_text()
    assert "linux/arm64 failed in test: tests failed on linux/arm64" in text
    assert "$ sh -c pytest exited 1" in text
    assert "AssertionError: token=" in text and secret not in text
