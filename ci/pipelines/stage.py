"""One stage, reported: start/finish lines on the Progress port, failures included.

The one context manager every stage of the release handle runs in, instead of a copy of
start/try/fail/finish per stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ci.core.errors import CIError
from ci.core.ports import Progress
from ci.core.redact import redact
from ci.core.results import PlatformResult


@dataclass
class Note:
    """What a stage says when it finishes (set inside the `with reported(...)` block)."""

    detail: str = ""
    ok: bool = True


@contextmanager
def reported(progress: Progress | None, lane: str, stage: str, detail: str = "",
             placement: str = "") -> Iterator[Note]:
    """Report start and finish of one stage; a CIError finishes it as failed and propagates."""
    if progress:
        progress.stage_started(lane, stage, detail, placement)
    note = Note()
    try:
        yield note
    except CIError as exc:
        if progress:
            progress.stage_finished(lane, stage, False, redact(exc.message))
        raise
    if progress:
        progress.stage_finished(lane, stage, note.ok, redact(note.detail))


def job_detail(result: PlatformResult) -> str:
    """A platform job's finish line: status and time; on failure the step's message, the
    command with its exit code and stderr's end; a run-time fallback to qemu says so."""
    detail = f"{result.status}, {result.seconds:.0f} s"
    if result.failure:
        detail += f": {result.failure.message}"
        detail += "".join(f"\n    {line}" for line in result.failure.console_lines())
    if result.placement_reason and "fell back" in result.placement_reason:
        detail += f" [{result.placement_reason}]"
    return redact(detail)
