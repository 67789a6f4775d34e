"""Owner labels on every container the Docker engine creates, and the sweep of those a dead
`ci` left behind.

A SIGKILLed ci runs no cleanup, so its test container would keep running. Each container
carries its owner's pid, process start time, host name and run id; the first platform job
on a daemon removes the containers whose owner, on this host, is no longer alive.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from ci.adapters import proc

log = logging.getLogger(__name__)
OWNER_PID = "dev.maci.owner-pid"
OWNER_START = "dev.maci.owner-start"  # /proc start time: a reused pid is not the owner
OWNER_HOST = "dev.maci.owner-host"
RUN_ID = "dev.maci.run-id"
DockerCall = Callable[..., proc.Result]  # DockerEngine.docker(args, step=..., check=...)
_swept: set[str] = set()
_lock = threading.Lock()


def owner_labels(run_id: str) -> dict[str, str]:
    """The labels naming this process as the container's owner."""
    pid = os.getpid()
    return {OWNER_PID: str(pid), OWNER_START: proc.start_time(pid),
            OWNER_HOST: socket.gethostname(), RUN_ID: run_id}


def label_args(run_id: str) -> list[str]:
    """`--label k=v` for `docker create` / `docker run`."""
    args: list[str] = []
    for key, value in owner_labels(run_id).items():
        args += ["--label", f"{key}={value}"]
    return args


def owner_dead(pid: str, started: str) -> bool:
    """Whether the owner (a pid on this host, and its start time when recorded) is gone."""
    return pid.isdigit() and not proc.alive(int(pid), started)


def sweep(docker: DockerCall, daemon: str) -> list[str]:
    """Remove the containers on `daemon` whose owner on this host died (once per daemon and
    process); one message per dead run, also logged."""
    with _lock:
        if daemon in _swept:
            return []
        _swept.add(daemon)
    fmt = (f'{{{{.ID}}}}\t{{{{.Label "{OWNER_PID}"}}}}\t{{{{.Label "{OWNER_START}"}}}}'
           f'\t{{{{.Label "{RUN_ID}"}}}}')
    listed = docker(["ps", "-a", "--no-trunc", "--filter", f"label={OWNER_HOST}={socket.gethostname()}",
                     "--format", fmt], step="sweep containers", check=False)
    if not listed.ok:
        return []
    dead: dict[str, list[str]] = {}
    for row in listed.stdout.splitlines():
        cid, pid, started, run = [*row.split("\t"), "", "", ""][:4]
        if cid and owner_dead(pid, started):
            dead.setdefault(run or "?", []).append(cid)
    messages = []
    for run, ids in sorted(dead.items()):
        docker(["rm", "--force", "--volumes", *ids], step="remove container", check=False)
        noun = "container" if len(ids) == 1 else "containers"
        messages.append(f"removed {len(ids)} leftover test {noun} of dead run {run}")
        log.warning("%s", messages[-1])
    return messages
