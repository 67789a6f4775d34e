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
