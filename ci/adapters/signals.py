"""SIGTERM handled like Ctrl-C, and sections that a signal must not cut in half.

Runners (GitLab, GitHub after SIGINT, systemd, Kubernetes) stop a job with SIGTERM. Python's
default would kill the process with no cleanup, so `install()` turns SIGTERM into the same
path as SIGINT: whatever SIGINT handler is current runs (Python's KeyboardInterrupt, or
asyncio's runner that cancels the main task), so every `finally` and cancel scope cleans up.
`deferred(what)` holds both signals back while a short write sequence (moving release tags)
finishes; the signal is then delivered at the section's end.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

_state: dict[str, Any] = {"received": None, "pending": None, "depth": 0, "what": ""}
_lock = threading.Lock()


def _deliver(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if handler is _on_signal:  # inside a deferred section's own SIGINT handler
        raise KeyboardInterrupt
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def _on_signal(signum: int, frame: FrameType | None) -> None:
    with _lock:
        _state["received"] = _state["received"] or signum
        if _state["depth"] > 0:
            _state["pending"] = signum
            sys.stderr.write(f"{signal.Signals(signum).name} received: finishing "
                             f"{_state['what']} first\n")
            return
    _deliver(signum, frame)


def install() -> None:
    """Route SIGTERM through the current SIGINT handler (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state.update(received=None, pending=None, depth=0, what="")
    signal.signal(signal.SIGTERM, _on_signal)


def received() -> int | None:
    """The first SIGINT/SIGTERM this process got since `install()`, if any."""
    value = _state["received"]
    return int(value) if value is not None else None


def note(signum: int) -> None:
    """Record a signal seen elsewhere (a KeyboardInterrupt is a SIGINT)."""
    with _lock:
        _state["received"] = _state["received"] or signum


def exit_code(default: int = 130) -> int:
    """130 for SIGINT (and Ctrl-C without a recorded signal), 143 for SIGTERM."""
    return 128 + int(signal.SIGTERM) if received() == signal.SIGTERM else default


def name() -> str:
    got = received()
    return signal.Signals(got).name if got is not None else "SIGINT"


@contextlib.contextmanager
def deferred(what: str) -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then deliver the first one that arrived."""
    main = threading.current_thread() is threading.main_thread()
    old_int = signal.getsignal(signal.SIGINT) if main else None
    with _lock:
        _state["depth"] += 1
        _state["what"] = what
    if main:
        signal.signal(signal.SIGINT, _on_signal)
    try:
        yield
    finally:
        if main and old_int is not None:
            signal.signal(signal.SIGINT, old_int)
        with _lock:
            _state["depth"] -= 1
            pending = _state["pending"] if _state["depth"] == 0 else None
            if pending is not None:
                _state["pending"] = None
    if pending is not None:
        raise KeyboardInterrupt


def pending() -> bool:
    """True while a deferred section holds a signal back (callers may stop early)."""
    return _state["pending"] is not None
