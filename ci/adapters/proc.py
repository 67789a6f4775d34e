"""The one helper every subprocess goes through (as in pre-commit's `cmd_output`).

It translates "executable not found" and timeouts into our error tree, masks secrets in
captured output, and never uses a shell.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.core.errors import StepFailed, ToolMissing
from ci.core.redact import redact


@dataclass(frozen=True)
class Result:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


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
) -> Result:
    """Run `cmd`, capture text output; raise StepFailed on non-zero exit when `check`."""
    argv = [os.fspath(c) for c in cmd]
    environ = dict(os.environ if env is None else env)
    if extra_env:
        environ.update(extra_env)
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=environ,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise ToolMissing(f"{argv[0]!r} is not installed or not on PATH") from None
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        raise StepFailed(
            f"{step or argv[0]}: timed out after {timeout:g} s",
            step=step, cmd=argv, stdout=redact(out),
        ) from None
    result = Result(argv, proc.returncode, redact(proc.stdout), redact(proc.stderr))
    if check and not result.ok:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
        raise StepFailed(
            f"{step or Path(argv[0]).name} failed (exit {result.returncode}): {last[0]}",
            step=step, cmd=argv, returncode=result.returncode,
            stdout=result.stdout, stderr=result.stderr,
        )
    return result
