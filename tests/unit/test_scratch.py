"""Scratch folders under the state dir: removed by their owner on every exit Python sees, and
by the next run when the owner was SIGKILLed (its pid is dead, or reused by another process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ci.adapters import proc, scratch


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_dead_owners_folders_are_swept(tmp_path: Path) -> None:
    me = os.getpid()
    dead = tmp_path / f"train-out-{dead_pid()}-123-abcd"
    reused = tmp_path / f"train-out-{me}-1-abcd"  # this pid, but another start time
    mine = tmp_path / f"train-out-{me}-{proc.start_time(me)}-abcd"
    other_kind = tmp_path / f"deploy-{dead_pid()}-1-abcd"
    for folder in (dead, reused, mine, other_kind):
        folder.mkdir()
    said = scratch.sweep(tmp_path, "train-out", "training output folder")
    assert not dead.exists() and not reused.exists()
    assert mine.exists() and other_kind.exists()
    assert said == [f"removed 2 leftover training output folders of dead runs: "
                    f"{', '.join(sorted([dead.name, reused.name]))}"]
    assert scratch.sweep(tmp_path, "train-out", "training output folder") == []


def test_an_owned_folder_is_named_after_its_owner_and_removed(tmp_path: Path) -> None:
    with scratch.owned(tmp_path / "tmp", "train-out") as folder:
        name = Path(folder).name
        assert name.startswith(f"train-out-{os.getpid()}-{proc.start_time(os.getpid())}-")
        assert scratch.sweep(tmp_path / "tmp", "train-out", "x") == []  # alive: kept
    assert not Path(folder).exists()
