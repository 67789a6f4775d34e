"""One release at a time per state dir: an advisory lock that says who holds it.

Two runs in one checkout would race on the journal, the release record and the tags (two
model versions, tags on one index, alias on another). `flock` is released by the kernel
when its holder dies, even by SIGKILL, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from ci.core.errors import Busy, UsageError

LOCK_FILE = "release.lock"
DEFAULT_TIMEOUT = 30.0


def timeout_from(environ: Mapping[str, str]) -> float:
    """MACI_LOCK_TIMEOUT seconds to wait for another run (default 30; 0 = fail at once)."""
    raw = environ.get("MACI_LOCK_TIMEOUT", "")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"MACI_LOCK_TIMEOUT={raw!r}: not a number of seconds") from None
    if value < 0:
        raise UsageError(f"MACI_LOCK_TIMEOUT={raw!r}: must be >= 0")
    return value


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return "another run"
    if not isinstance(data, dict):
        return "another run"
    return (f"`ci {data.get('command', '?')}` since {data.get('since', '?')} (pid "
            f"{data.get('pid', '?')} on {data.get('host', '?')})")


@contextlib.contextmanager
def release_lock(state_dir: Path, *, subject: str, command: str,
                 timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold the state dir's release lock for the block; Busy (exit 1) after `timeout` s.

    A state dir this lock had to create is removed again when the run wrote nothing else
    there, so a command refused for bad input leaves no trace.
    """
    created = not state_dir.exists()
    deadline = time.monotonic() + timeout
    fd = _acquire(state_dir, subject, timeout, deadline)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            if created:
                _remove_if_only_lock(state_dir)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open(state_dir: Path) -> int:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        return os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"project.state_dir: {state_dir} is not a writable directory "
                         f"({exc.strerror})") from None


def _acquire(state_dir: Path, subject: str, timeout: float, deadline: float) -> int:
    """Lock the file; start over when its holder removed it meanwhile (a stale inode)."""
    while True:
        fd = _open(state_dir)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Busy(f"another release of {subject} is running: {_holder(fd)}; "
                                   f"waited {timeout:g} s (MACI_LOCK_TIMEOUT)") from None
                    time.sleep(0.2)
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(state_dir / LOCK_FILE).st_ino:
                    return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _remove_if_only_lock(state_dir: Path) -> None:
    with contextlib.suppress(OSError):
        if [p.name for p in state_dir.iterdir()] == [LOCK_FILE]:
            (state_dir / LOCK_FILE).unlink()
            state_dir.rmdir()
