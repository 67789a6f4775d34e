"""Nothing `ci` starts outlives it: the training subprocess, test containers, cancelled jobs.

Real subprocesses, a real Docker daemon (the sample app, amd64 native + arm64 under qemu), a
real MLflow sqlite store; `ci` runs as its own process and is stopped with real signals.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
import pytest

from ci.adapters import proc
from ci.adapters.engines.docker_containers import OWNER_PID, RUN_ID
from ci.core import config as cfg
from ci.stages.fanout import execute
from ci.stages.prepare import prepare
from tests.fixtures.sampleapp import make_project, remove_local_images

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "127.0.0.1:5999/it/leftovers"  # never pushed: every build here is --no-publish


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
    """Poll `check` until true; the seconds it took (fails the test on timeout)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true after {timeout:g} s: {check}")
        time.sleep(step)
    return time.monotonic() - started


@dataclass
class Ci:
    """`python -m ci ARGS` in its own session, output into files (a full pipe never blocks it)."""

    process: subprocess.Popen[str]
    out: Path
    err: Path
    files: list[IO[str]] = field(default_factory=list)

    @classmethod
    def start(cls, cwd: Path, *args: str, env: dict[str, str] | None = None) -> Ci:
        out, err = cwd / f".ci-{time.monotonic_ns()}.out", cwd / f".ci-{time.monotonic_ns()}.err"
        files = [out.open("w"), err.open("w")]
        process = subprocess.Popen([sys.executable, "-m", "ci", *args], cwd=cwd, text=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
                                   stdout=files[0], stderr=files[1], start_new_session=True)
        return cls(process, out, err, files)

    def wait(self, timeout: float = 300) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            for f in self.files:
                f.close()
        return code

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()


def containers(label: str) -> dict[str, str]:
    """name → state of every container (running or not) with this label."""
    rows = subprocess.run(["docker", "ps", "-a", "--filter", f"label={label}", "--format",
                           "{{.Names}} {{.State}}"], capture_output=True, text=True,
                          check=True).stdout.split("\n")
    return dict(row.split(" ", 1) for row in rows if row.strip())


def running(label: str) -> list[str]:
    return [name for name, state in containers(label).items() if state == "running"]


# ---------------------------------------------------------------- the training subprocess

TRAIN = """\
import os, subprocess, time
from pathlib import Path
child = subprocess.Popen(["sleep", "300"])  # a grandchild of ci, in the training's group
Path("pids.tmp").write_text(f"{os.getpid()} {child.pid}")
Path("pids.tmp").rename("pids")
time.sleep(300)
"""


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "trainer"
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "ci.toml").write_text(
        '[project]\nname = "leftovers"\nimage = "127.0.0.1:5999/it/trainer"\n\n'
        '[model]\ntrain_command = ["python", "train.py"]\nregistered_model = "leftovers"\n')
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    yield root
    pids = root / "pids"
    for pid in pids.read_text().split() if pids.exists() else []:
        if proc.alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)


def pids_of(root: Path, run: Ci) -> tuple[int, int]:
    wait_for(lambda: (root / "pids").exists() or run.process.poll() is not None, 120)
    assert (root / "pids").exists(), run.stderr
    train, grandchild = (int(p) for p in (root / "pids").read_text().split())
    assert proc.alive(train) and proc.alive(grandchild)
    return train, grandchild


def test_sigkill_of_ci_ends_the_training(trainer: Path) -> None:
    run = Ci.start(trainer, "train")
    train, grandchild = pids_of(trainer, run)
    started = time.monotonic()
    os.kill(run.process.pid, signal.SIGKILL)  # no handler, no finally: only the kernel acts
    wait_for(lambda: not proc.alive(train) and not proc.alive(grandchild), 5, step=0.005)
    gone = time.monotonic() - started
    assert run.wait() == -signal.SIGKILL
    print(f"\n[measure] SIGKILL of ci -> training and its child gone in {gone * 1000:.0f} ms "
          "(PR_SET_PDEATHSIG on the group leader)")


def test_sigterm_of_ci_stops_the_whole_training_group_and_marks_the_run_killed(
        trainer: Path) -> None:
    run = Ci.start(trainer, "train")
    train, grandchild = pids_of(trainer, run)
    started = time.monotonic()
    os.kill(run.process.pid, signal.SIGTERM)  # to ci only, as a runner stopping a job does
    code = run.wait(60)
    seconds = time.monotonic() - started
    assert code == 143, run.stderr
    assert not proc.alive(train) and not proc.alive(grandchild)
    assert "stopped train (pid" in run.stderr and "interrupted by SIGTERM" in run.stderr
    with sqlite3.connect(trainer / ".maci" / "mlflow.db") as db:
        assert [s for (s,) in db.execute("select status from runs")] == ["KILLED"]
    print(f"\n[measure] SIGTERM of ci train -> exit 143, training group gone, in {seconds:.2f} s")


@pytest.mark.parametrize("group", [False, True], ids=["docker-call", "training"])
def test_a_cancelled_worker_thread_stops_its_command_and_cleanups_still_run(
        tmp_path: Path, group: bool) -> None:
    """A fail-fast cancel or Ctrl-C under anyio (`ci run`: training and docker calls run in
    worker threads): the command stops — with `group`, its children too."""
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"
    seen: dict[str, float] = {}

    async def main() -> None:
        with anyio.move_on_after(1.0):
            await anyio.to_thread.run_sync(lambda: proc.run(["sh", "-c", script], group=group),
                                           abandon_on_cancel=True)
        started = time.monotonic()
        shell, sleeper = (int(p) for p in pids.read_text().split())
        wait_for(lambda: not proc.alive(shell), 2, step=0.01)
        seen["gone"] = time.monotonic() - started
        if group:
            wait_for(lambda: not proc.alive(sleeper), 2, step=0.01)
        else:
            os.kill(sleeper, signal.SIGKILL)  # a docker CLI call has no children to reach
        with anyio.CancelScope() as scope:  # a command started after the cancel still runs
            scope.cancel()
            with anyio.CancelScope(shield=True):
                res = await anyio.to_thread.run_sync(
                    lambda: proc.run(["sh", "-c", "sleep 0.3; echo ran"]))
                assert res.stdout == "ran\n"

    anyio.run(main)
    print(f"\n[measure] cancelled worker thread -> its command gone {seen['gone'] * 1000:.0f} ms "
          "after the cancel returned")


# ---------------------------------------------------------------- test containers


@pytest.fixture
def app(docker_stack: None, tmp_path: Path) -> Iterator[Path]:
    project = make_project(tmp_path / "app", IMAGE, platforms=("linux/amd64",))
    yield project
    remove_local_images(IMAGE)


def sleeping(seconds: int = 120) -> dict[str, str]:
    return {"MACI_TEST__COMMAND": json.dumps(["sleep", str(seconds)])}


def test_sigterm_during_the_test_container_exits_143_and_removes_it(app: Path) -> None:
    run = Ci.start(app, "build", "--no-publish", env=sleeping())
    mine = f"{OWNER_PID}={run.process.pid}"
    wait_for(lambda: bool(running(mine)) or run.process.poll() is not None, 240, step=0.2)
    assert running(mine), run.stderr
    started = time.monotonic()
    os.kill(run.process.pid, signal.SIGTERM)  # to ci only, not its group
    code = run.wait(60)
    seconds = time.monotonic() - started
    assert code == 143, run.stderr
    assert "interrupted by SIGTERM" in run.stderr
    assert containers(mine) == {}
    print(f"\n[measure] SIGTERM during the tests -> exit 143, container gone, in {seconds:.2f} s")


def test_a_sigkilled_build_leaves_a_container_the_next_build_removes(app: Path) -> None:
    run = Ci.start(app, "build", "--no-publish", env=sleeping())
    mine = f"{OWNER_PID}={run.process.pid}"
    wait_for(lambda: bool(running(mine)) or run.process.poll() is not None, 240, step=0.2)
    [name] = running(mine)
    run_id = subprocess.run(["docker", "inspect", "--format", f'{{{{index .Config.Labels "{RUN_ID}"}}}}',
                             name], capture_output=True, text=True, check=True).stdout.strip()
    os.killpg(run.process.pid, signal.SIGKILL)  # ci and its docker CLI children: no cleanup at all
    run.wait()
    time.sleep(1)
    assert containers(mine) == {name: "running"}  # left behind, still running its tests
    again = Ci.start(app, "build", "--no-publish")
    assert again.wait() == 0, again.stderr
    assert f"removed 1 leftover test container of dead run {run_id}" in again.stderr
    assert containers(mine) == {}
    assert containers(f"{OWNER_PID}={again.process.pid}") == {}  # and its own went as usual


# ---------------------------------------------------------------- fail-fast

# amd64 fails after a few seconds (so arm64 is in its tests by then); arm64 would sleep long
FAIL_AMD64_SLOW_ARM64 = ['sh', '-c', 'if [ "$(uname -m)" = aarch64 ]; then sleep {slow}; exit 0; '
                         'else sleep {fast}; exit 1; fi']


def two_platform_command(fast: int, slow: int) -> list[str]:
    return [part.format(fast=fast, slow=slow) for part in FAIL_AMD64_SLOW_ARM64]


@pytest.fixture
def both(docker_stack: None, tmp_path: Path) -> Iterator[Path]:
    project = make_project(tmp_path / "both", IMAGE)
    yield project
    remove_local_images(IMAGE)


def test_first_failure_cancels_the_other_platform_and_removes_its_container(both: Path) -> None:
    env = {"MACI_TEST__COMMAND": json.dumps(two_platform_command(fast=8, slow=90))}
    run = Ci.start(both, "build", "--no-publish", "--json", env=env)
    mine = f"{OWNER_PID}={run.process.pid}"
    seen: dict[str, tuple[float, float]] = {}  # container → (first seen, last seen)
    while run.process.poll() is None:
        now = time.monotonic()
        for name in running(mine):
            seen[name] = (seen.get(name, (now, now))[0], now)
        time.sleep(0.2)
    code = run.wait()
    ended = time.monotonic()
    assert code == 1, run.stderr
    results = {r["platform"]: r for r in json.loads(run.stdout)["results"]}
    amd, arm = results["linux/amd64"], results["linux/arm64"]
    assert amd["status"] == "failed" and amd["failure"]["step"] == "test"
    assert arm["status"] == "failed"
    assert arm["failure"] == {**arm["failure"], "step": "cancelled",
                              "message": "cancelled: linux/amd64 failed first"}
    [arm_box] = [n for n in seen if "linux-arm64" in n]
    [amd_box] = [n for n in seen if "linux-amd64" in n]
    assert containers(mine) == {}  # the cancelled job's test container was removed
    started, _ = seen[arm_box]
    assert ended - started < 45, "the arm64 tests (90 s) were not cut short"
    cancel = seen[arm_box][1] - seen[amd_box][1]
    print(f"\n[measure] fail-fast: amd64 failed -> arm64 container gone within {cancel:.1f} s "
          f"(0.2 s polling); arm64 tests ran {seen[arm_box][1] - started:.1f} s of 90 s")


def test_without_fail_fast_the_other_platform_runs_to_completion(both: Path) -> None:
    env = {"MACI_TEST__COMMAND": json.dumps(two_platform_command(fast=0, slow=12))}
    config = cfg.load(both / "ci.toml", env, both)
    prepared = prepare(config, environ={**os.environ, **env})
    started = time.monotonic()
    amd, arm = execute(prepared, config, push=False, environ=dict(os.environ), fail_fast=False)
    seconds = time.monotonic() - started
    assert amd.status == "failed" and amd.failure is not None and amd.failure.step == "test"
    assert arm.status == "passed", arm.failure
    assert arm.durations["test"] >= 12
    print(f"\n[measure] fail_fast=False: arm64 ran its 12 s tests to the end ({seconds:.1f} s wall)")
