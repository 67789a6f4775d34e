"""Scratch folders a run owns under `<state_dir>/tmp`, and the sweep of dead owners' ones.

A `TemporaryDirectory` is removed on every exit path Python sees (errors, Ctrl-C, SIGTERM);
a SIGKILL runs no cleanup, so each folder is named after its owner (pid + start time) and
the next run removes the ones whose owner is gone, saying so.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from ci.adapters import proc

log = logging.getLogger(__name__)


def owned(parent: Path, kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder `<kind>-<pid>-<start>-<random>` under `parent` (created if needed)."""
    parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    return tempfile.TemporaryDirectory(prefix=f"{kind}-{pid}-{proc.start_time(pid)}-",
                                       dir=parent)


def sweep(parent: Path, kind: str, what: str) -> list[str]:
    """Remove `parent`'s `<kind>-*` folders whose owning process is dead; one message (also
    logged) when any was removed, e.g. 'removed 1 leftover deploy clone of dead runs: …'."""
    removed: list[str] = []
    for path in sorted(parent.glob(f"{kind}-*")) if parent.is_dir() else []:
        match = re.fullmatch(rf"{re.escape(kind)}-(\d+)-(\d*)-.+", path.name)
        if match and path.is_dir() and not proc.alive(int(match.group(1)), match.group(2)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    if not removed:
        return []
    noun = what if len(removed) == 1 else f"{what}s"
    message = f"removed {len(removed)} leftover {noun} of dead runs: {', '.join(removed)}"
    log.warning("%s", message)
    return [message]
