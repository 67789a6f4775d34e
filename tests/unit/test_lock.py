"""One release per state dir: a second run is told who holds the lock, and a dead holder's
lock is free again (the kernel drops a flock with its process)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ci.adapters.lock import release_lock, timeout_from
from ci.core.errors import Busy, UsageError

HOLD = """
import sys, time
from pathlib import Path
from ci.adapters.lock import release_lock
with release_lock(Path(sys.argv[1]), subject="img", command="run", timeout=5):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_release_is_refused_naming_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(Busy, match=rf"another release of img is running: `ci run` since "
                                       rf".* \(pid {holder.pid} on "), \
                release_lock(tmp_path, subject="img", command="build", timeout=0.5):
            pass
        assert time.monotonic() - started >= 0.5
        holder.kill()  # SIGKILL: no cleanup at all
        holder.wait()
        with release_lock(tmp_path, subject="img", command="build", timeout=5):
            pass
    finally:
        holder.kill()


def test_a_state_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(UsageError, match=r"project\.state_dir: .* not a writable directory"), \
            release_lock(tmp_path / "state", subject="img", command="run"):
        pass


@pytest.mark.parametrize("raw", ["x", "-1"])
def test_a_bad_lock_timeout_names_the_variable(raw: str) -> None:
    with pytest.raises(UsageError, match="MACI_LOCK_TIMEOUT"):
        timeout_from({"MACI_LOCK_TIMEOUT": raw})


def test_a_state_dir_the_lock_created_goes_when_nothing_else_was_written(tmp_path: Path) -> None:
    """A command refused for bad input after taking the lock leaves no trace."""
    with release_lock(tmp_path / "state", subject="img", command="run"):
        assert (tmp_path / "state" / "release.lock").exists()
    assert not (tmp_path / "state").exists()
    with release_lock(tmp_path / "state", subject="img", command="run"):
        (tmp_path / "state" / "verdict.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["release.lock",
                                                                     "verdict.json"]
