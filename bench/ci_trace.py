"""Where a `ci` command's time outside the jobs goes: `python -m bench.ci_trace ARGS...`.

Runs `ci ARGS` in this process with every subprocess start stamped (seconds since this
process's first line) on stderr as `@@ <t> <argv>`; `anatomy()` turns those stamps into
phases: Python start + imports up to the first docker call, discovery (docker info, base
image, git), the jobs (to the last job's `passed on` line), and what comes after them.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

T0 = time.perf_counter()
_STAMP = re.compile(r"^@@ ([0-9.]+) (.*)$")
BUILD_CALLS = ("docker buildx build", "docker create", "docker start")
TOP_PACKAGES = 10


def _stamp(argv: Sequence[object]) -> None:
    line = " ".join(str(a) for a in argv).replace("\n", " ")
    print(f"@@ {time.perf_counter() - T0:.4f} {line}", file=sys.stderr, flush=True)


def _install() -> None:
    popen_init = subprocess.Popen.__init__

    def init(self: subprocess.Popen[Any], args: Any, *a: Any, **k: Any) -> None:
        _stamp(args if isinstance(args, list | tuple) else [args])
        popen_init(self, args, *a, **k)

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]
    exec_ = asyncio.create_subprocess_exec

    async def create(*args: Any, **k: Any) -> Any:
        _stamp(args)
        return await exec_(*args, **k)

    asyncio.create_subprocess_exec = create  # type: ignore[assignment]


class _JobEnds:
    """stderr that also stamps each `<platform>: passed on ...` line (a job's end)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.buf = inner, ""

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if ": passed on " in line:
                self.inner.write(f"@@ {time.perf_counter() - T0:.4f} JOBEND {line}\n")
        return int(self.inner.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def anatomy(stderr: str, wall: float) -> dict[str, float]:
    """Phases of one traced run (seconds): imports, discovery, jobs, after the jobs."""
    stamps = [(float(m.group(1)), m.group(2)) for m in map(_STAMP.match, stderr.splitlines())
              if m]
    docker = [t for t, cmd in stamps if _is_docker(cmd)]
    work = [t for t, cmd in stamps if any(c in cmd for c in BUILD_CALLS)]
    if not docker or not work:
        return {}
    ends = [t for t, cmd in stamps if cmd.startswith("JOBEND ")]
    first_docker, first_work = docker[0], work[0]
    last = max(ends) if ends else stamps[-1][0]
    return {"imports": round(first_docker, 3), "discovery": round(first_work - first_docker, 3),
            "jobs": round(last - first_work, 3), "after_jobs": round(wall - last, 3),
            "docker_calls": float(sum(1 for _, cmd in stamps if _is_docker(cmd))),
            "git_calls": float(sum(1 for _, cmd in stamps if cmd.startswith("git ")))}


def _is_docker(cmd: str) -> bool:
    """A docker CLI call, direct or through the process-group wrapper (`python -c ... docker`)."""
    return cmd.startswith("docker ") or " docker " in cmd


_IMPORT = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def import_breakdown(stderr: str) -> dict[str, float]:
    """`python -X importtime` output -> seconds of import work per top-level package (each
    module's own time, so nothing counts twice), plus `total` (the root imports' sum)."""
    out: dict[str, float] = {}
    total = 0
    for m in map(_IMPORT.match, stderr.splitlines()):
        if not m:
            continue
        own, cumulative, indent, name = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
        root = name.split(".")[0]
        out[root] = out.get(root, 0.0) + own / 1e6
        if not indent:
            total += cumulative
    ranked = sorted(out.items(), key=lambda kv: -kv[1])
    top = {k: round(v, 3) for k, v in ranked[:TOP_PACKAGES]}
    other = round(sum(v for _, v in ranked[TOP_PACKAGES:]), 3)
    return {"total": round(total / 1e6, 3), **top, "other": other}


def imports(modules: Sequence[str], env: dict[str, str]) -> dict[str, float]:
    """One `python -X importtime -c 'import MODULES'` (after an untimed warm-up)."""
    cmd = [sys.executable, "-X", "importtime", "-c", "import " + ", ".join(modules)]
    subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    return import_breakdown(res.stderr)


def main() -> int:
    _install()
    sys.stderr = _JobEnds(sys.stderr)
    from ci.cli import entry

    sys.argv = ["ci", *sys.argv[1:]]
    entry()  # the console script's own exit (os._exit after flushing, no teardown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
