"""The one helper every subprocess goes through (as in pre-commit's `cmd_output`).

It translates "executable not found" and timeouts into our error tree, masks secrets in
captured output, and never uses a shell. A command waits in short slices, so Ctrl-C, a
timeout, or the cancellation of the anyio task whose worker thread runs it stops the child
(a cancelled platform job must not keep building). `group=True` (training) also gives the
child its own process group and PR_SET_PDEATHSIG, so it never outlives `ci`, even a SIGKILLed one.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.core.errors import StepFailed, ToolMissing
from ci.core.redact import redact

log = logging.getLogger(__name__)
POLL = 0.1  # seconds between checks for a cancelled host task
GRACE = 5.0  # seconds a stopped process group gets between SIGTERM and SIGKILL
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Result:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _pdeathsig() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when the spawning thread ends; it
    also ends a child whose parent died before the call (the race after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


# The process-group leader `spawn` puts between ci and the command: when ci dies (even by
# SIGKILL) the kernel SIGTERMs it (PR_SET_PDEATHSIG), and it passes SIGTERM to the whole
# group, so the command's own children end too. Stdlib only; started with -I -S (fast).
_LEADER = """
import os, signal, subprocess, sys
def stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
signal.signal(signal.SIGTERM, stop)
try:
    child = subprocess.Popen(sys.argv[1:], restore_signals=True)
except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
    sys.stderr.write(f"MACI_LEADER_NOT_FOUND {exc}\\n")
    sys.exit(127)
code = child.wait()
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""
_NOT_FOUND = "MACI_LEADER_NOT_FOUND"


def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bool = False,
) -> subprocess.Popen[str]:
    """Start `cmd` (text pipes) in a process group of its own, so `stop()` reaches all of it;
    on Linux under a leader with PR_SET_PDEATHSIG, so a SIGKILLed ci still ends the group.
    The signal fires when the SPAWNING THREAD ends: wait in the thread that started it."""
    argv = [os.fspath(c) for c in cmd]
    hook = _pdeathsig()
    full = [sys.executable, "-I", "-S", "-c", _LEADER, *argv] if hook else argv
    try:
        return subprocess.Popen(
            full, cwd=cwd, env=dict(os.environ if env is None else env), text=True,
            stdin=subprocess.PIPE if input else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            process_group=0, preexec_fn=hook,
        )
    except FileNotFoundError:
        raise ToolMissing(f"{argv[0]!r} is not installed or not on PATH") from None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(process: subprocess.Popen[str], grace: float = GRACE, *,
         what: str = "") -> tuple[str, str]:
    """SIGTERM the process group `spawn()` made, SIGKILL what is left after `grace` s, reap
    it; returns the output read so far and logs one line saying how it ended."""
    started = time.monotonic()
    if isinstance(process.args, list) and _LEADER in process.args:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)  # the leader passes it on, once, to the group
    else:
        _signal_group(process.pid, signal.SIGTERM)
    how = "SIGTERM"
    try:
        out, err = process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        how = f"SIGKILL after {grace:g} s"
        out, err = "", ""
    _signal_group(process.pid, signal.SIGKILL)  # also any child the leader left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        more_out, more_err = process.communicate(timeout=grace)
        out, err = out + (more_out or ""), err + (more_err or "")
    if process.returncode is None:  # a pipe held open outside the group: do not hang on it
        process.kill()
        process.wait()
    log.warning("stopped %s (pid %d and its process group): %s, ended in %.1f s",
                what or "command", process.pid, how, time.monotonic() - started)
    return out or "", err or ""


def _host_cancelled() -> bool:
    """True in an anyio worker thread whose host task was cancelled (False elsewhere)."""
    from anyio.from_thread import check_cancelled

    try:
        check_cancelled()
    except RuntimeError:  # not an anyio worker thread (NoEventLoopError)
        return False
    except BaseException:  # the backend's cancellation exception
        return True
    return False


def _raise_cancelled() -> None:
    from anyio.from_thread import check_cancelled

    check_cancelled()
    raise KeyboardInterrupt  # not reached: the host task was seen cancelled


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    check: bool = True,
    step: str = "",
    group: bool = False,
    grace: float = GRACE,
) -> Result:
    """Run `cmd`, capture text output; raise StepFailed on non-zero exit when `check`.

    Ctrl-C, a timeout, or a cancel of the host task (one that started before the command
    did: cleanups after a cancel still run) kills the child — with `group`, its whole
    process group, SIGTERM first and SIGKILL after `grace` s (see `spawn`).
    """
    argv = [os.fspath(c) for c in cmd]
    environ = dict(os.environ if env is None else env)
    if extra_env:
        environ.update(extra_env)
    if group:
        process = spawn(argv, cwd=cwd, env=environ, input=input is not None)
    else:
        try:
            process = subprocess.Popen(
                argv, cwd=cwd, env=environ, text=True, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise ToolMissing(f"{argv[0]!r} is not installed or not on PATH") from None

    def halt() -> tuple[str, str]:
        if group:
            return stop(process, grace, what=step)
        process.kill()
        out, err = process.communicate()
        return out or "", err or ""

    cancellable = not _host_cancelled()
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = input
    try:
        while True:
            left = POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic()))
            try:
                stdout, stderr = process.communicate(pending, timeout=left)
                break
            except subprocess.TimeoutExpired:
                pending = None  # communicate keeps the rest of the input itself
            if cancellable and _host_cancelled():
                halt()
                _raise_cancelled()
            if deadline is not None and time.monotonic() >= deadline:
                out, _ = halt()
                raise StepFailed(
                    f"{step or argv[0]}: timed out after {timeout:g} s",
                    step=step, cmd=argv, stdout=redact(out),
                )
    except BaseException:  # Ctrl-C (and SIGTERM, see signals) while waiting
        if process.returncode is None:
            halt()
        raise
    if group and process.returncode == 127 and (stderr or "").startswith(_NOT_FOUND):
        raise ToolMissing(f"{argv[0]!r} is not installed or not on PATH")
    result = Result(argv, process.returncode, redact(stdout or ""), redact(stderr or ""))
    if check and not result.ok:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
        raise StepFailed(
            f"{step or Path(argv[0]).name} failed (exit {result.returncode}): {last[0]}",
            step=step, cmd=argv, returncode=result.returncode,
            stdout=result.stdout, stderr=result.stderr,
        )
    return result


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (field 3 on), [] when unreadable (not Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def start_time(pid: int) -> str:
    """When `pid` started (clock ticks since boot, stat field 22), '' when unknown: with the
    pid it names one process, so a reused pid is not mistaken for a dead owner."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def alive(pid: int, started: str = "") -> bool:
    """Whether process `pid` runs on this host (a zombie, dead but not yet reaped, is not);
    with `started` (a `start_time`), only when it is still that same process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    fields = _stat(pid)
    if fields[:1] == ["Z"]:
        return False
    return not started or start_time(pid) in ("", started)
