"""Registry credentials for docker/skopeo pushes: a private, temporary DOCKER_CONFIG (adapter).

Never `docker login` into the user's config and never a password on a command line: the
file is mode 0600 in a fresh 0700 folder, removed when the push is over.
"""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ci.adapters.registry import Credentials


@contextlib.contextmanager
def docker_config(env: dict[str, str], registry: str,
                  creds: Credentials | None) -> Iterator[None]:
    """Point `env["DOCKER_CONFIG"]` at a temporary config holding only `registry`'s auth."""
    if creds is None:
        yield
        return
    saved = env.get("DOCKER_CONFIG")
    with tempfile.TemporaryDirectory(prefix="maci-docker-config-") as folder:
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        path = Path(folder) / "config.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps({"auths": {registry: {"auth": token}}}))
        env["DOCKER_CONFIG"] = folder
        try:
            yield
        finally:
            if saved is None:
                env.pop("DOCKER_CONFIG", None)
            else:
                env["DOCKER_CONFIG"] = saved
