#!/usr/bin/env python3
"""A fake `dagger` CLI for the SDK's provisioning path (stdlib only).

`<bin> session ...` records the environment it saw (notably _EXPERIMENTAL_DAGGER_RUNNER_HOST)
to MACI_DAGGER_FAKE_DIR/sessions/<token>.json, prints `{"port": N, "session_token": T}` for
the fake engine on MACI_DAGGER_FAKE_PORT, and exits when its stdin closes, like the real one.
A runner host listed in MACI_DAGGER_FAKE_UNREACHABLE makes it fail as an unreachable engine;
one in MACI_DAGGER_FAKE_HANG makes it hang without a session line (for connect timeouts).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

SEEN = ("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN",
        "_EXPERIMENTAL_DAGGER_CLI_BIN")


def session(argv: list[str]) -> int:
    root = Path(os.environ["MACI_DAGGER_FAKE_DIR"])
    port = int(os.environ["MACI_DAGGER_FAKE_PORT"])
    host = os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "")
    down = [h for h in os.environ.get("MACI_DAGGER_FAKE_UNREACHABLE", "").split(",") if h]
    if host and host in down:
        sys.stderr.write(f"Error: failed to connect to engine at {host}: connection refused\n")
        return 1
    token = secrets.token_hex(16)
    record = {
        "token": token, "argv": argv, "pid": os.getpid(), "ppid": os.getppid(),
        "runner_host": host, "env": {k: os.environ[k] for k in SEEN if k in os.environ},
        "started": time.time(),
    }
    path = root / "sessions" / f"{token}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(path)
    if host and host in os.environ.get("MACI_DAGGER_FAKE_HANG", "").split(","):
        sys.stdin.read()  # never answers: an engine that accepts and then says nothing
        (root / "sessions" / f"{token}.closed").write_text(str(time.time()))
        return 0
    sys.stdout.write(json.dumps({"port": port, "session_token": token}) + "\n")
    sys.stdout.flush()
    sys.stdin.read()  # the SDK ends the session by closing our stdin
    (root / "sessions" / f"{token}.closed").write_text(str(time.time()))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["session"]:
        return session(argv)
    if argv[:1] == ["version"]:
        sys.stdout.write("dagger v0.21.8 (fake)\n")
        return 0
    sys.stderr.write(f"fake dagger: unsupported command {argv!r}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
