"""Runner discovery: ask each configured runner what it is (adapter; touches daemons).

Docker runners answer `docker info` (native platform, version) and `docker buildx inspect`
(platforms BuildKit can run, emulators included). A Dagger runner with a way in (a session
in the environment or a CLI that can provision one) is asked its `defaultPlatform` in a short
session of its own (a child process, as at run time); the declared platform, or this host's
for the default engine, stands in only when that engine does not answer at plan time.
Nothing Dagger is imported and no process is started when no Dagger runner is configured.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from ci.adapters import binfmt, proc
from ci.core import platforms
from ci.core.errors import CIError, PlatformError, StepFailed, ToolMissing
from ci.core.plan import RunnerInfo, choose_native

# (runner host, environ) → (the engine's defaultPlatform, its version); raises CIError
Prober = Callable[[str, Mapping[str, str]], tuple[str, str]]

DOCKER_TIMEOUT = 8.0
# what a Dagger engine can run: its image ships qemu emulators for these
DAGGER_EMULATES = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x", "linux/ppc64le",
                   "linux/riscv64"]


def docker_env(host: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment that points the docker CLI at `host` (empty = its own default)."""
    env = dict(environ)
    if host:
        env["DOCKER_HOST"] = host
        env.pop("DOCKER_CONTEXT", None)
    return env


def _parse_buildx_platforms(text: str) -> list[str]:
    found: list[str] = []
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() == "Platforms":
            for item in rest.split(","):
                try:
                    p = str(platforms.parse(item.strip().rstrip("*")))
                except PlatformError:
                    continue
                if p not in found:
                    found.append(p)
    return found


def _reason(line: str) -> str:
    """One error line of the docker CLI, short. For an ssh:// host it reads `error during
    connect: Get "…": command [ssh …] has exited with exit status 255, …: stderr=ssh: connect
    to host H port 22: No route to host`: keep what ssh said, which a cut at 300 chars loses."""
    head, sep, said = line.strip().partition(" stderr=")
    if sep and said.strip():
        return f"{head.split(':', 1)[0]}: {said.strip()}"[:300]
    return line.strip()[:300]


def _is_local(host: str) -> bool:
    return not host or host.startswith("unix://") or host.startswith("npipe://")


def discover_docker(runner: RunnerInfo, environ: Mapping[str, str]) -> RunnerInfo:
    env = docker_env(runner.host, environ)
    try:
        res = proc.run(
            ["docker", "info", "--format", "{{json .}}"], env=env, timeout=DOCKER_TIMEOUT,
            check=False, step="docker info",
        )
    except (ToolMissing, StepFailed) as exc:
        return runner.model_copy(update={"reachable": False, "error": str(exc)})
    info: dict[str, object] = {}
    with contextlib.suppress(ValueError):
        info = json.loads(res.stdout or "{}")
    if not res.ok or not info.get("ServerVersion"):
        lines = (res.stderr.strip() or res.stdout.strip() or "no answer").splitlines()
        err = next((ln for ln in lines if "daemon" in ln.lower() or "error" in ln.lower()),
                   lines[-1])
        return runner.model_copy(update={"reachable": False, "error": _reason(err)})
    native = str(platforms.from_engine(str(info.get("OSType", "linux")),
                                       str(info.get("Architecture", ""))))
    emulates: list[str] = []
    if _is_local(runner.host):
        # A local daemon emulates what this kernel's binfmt handlers (with flag F) run; reading
        # them is instant, where `docker buildx inspect` costs ~0.4 s of `ci plan`'s startup.
        emulates = [str(p) for p in binfmt.emulated_platforms() if str(p) != native]
    else:
        try:
            bx = proc.run(["docker", "buildx", "inspect"], env=env, timeout=DOCKER_TIMEOUT,
                          check=False, step="docker buildx inspect")
            emulates = [p for p in _parse_buildx_platforms(bx.stdout) if p != native]
        except (ToolMissing, StepFailed):
            pass
    return runner.model_copy(update={
        "reachable": True, "native": native, "emulates": emulates, "platform_source": "engine",
        "version": str(info.get("ServerVersion", "")),
    })


def dagger_session_env(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("DAGGER_SESSION_PORT") and environ.get("DAGGER_SESSION_TOKEN"))


def dagger_cli(environ: Mapping[str, str]) -> str | None:
    return environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN") or shutil.which(
        "dagger", path=environ.get("PATH")
    )


def probe_dagger(host: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """Ask the engine at `host` ("" = the default engine) its defaultPlatform and version."""
    from ci.adapters.engines.dagger_routing import probe_engine

    response = probe_engine(host, environ)
    return response.platform or "", response.version


def discover_dagger(runner: RunnerInfo, environ: Mapping[str, str],
                    probe: Prober | None = None) -> RunnerInfo:
    """The engine's own word on its platform when it answers; else the declared platform
    (or this host's, for the default engine), flagged as such in `platform_source`/`note`."""
    declared = runner.declared
    if runner.host:
        ok, err = dagger_cli(environ) is not None, "no dagger CLI to connect to this host"
    else:
        ok = dagger_session_env(environ) or dagger_cli(environ) is not None
        err = "no Dagger session (DAGGER_SESSION_PORT) and no dagger CLI on PATH"
    host_platform = None if runner.host else str(platforms.host())
    if not ok:  # no way in: nothing to ask
        guess = choose_native(declared, None, error=err, host_platform=host_platform)
        return runner.model_copy(update={"reachable": False, "error": err, "native": guess.native,
                                         "platform_source": guess.source})
    answered, version, why = "", "", ""
    try:
        answered, version = (probe or probe_dagger)(runner.host, environ)
        why = "" if answered else "no defaultPlatform in its answer"
    except CIError as exc:
        why = (exc.message.strip().splitlines() or ["no answer"])[-1][:300]
    choice = choose_native(declared, answered or None, error=why, host_platform=host_platform)
    if choice.native is None:  # a runner host that did not answer, and nothing declared
        return runner.model_copy(update={"reachable": False, "error": choice.note})
    return runner.model_copy(update={
        "reachable": True, "native": choice.native, "platform_source": choice.source,
        "note": choice.note, "version": version, "error": "",
        "emulates": [p for p in DAGGER_EMULATES if p != choice.native],
    })


def discover(runners: list[RunnerInfo], environ: Mapping[str, str] | None = None, *,
             probe: Prober | None = None) -> list[RunnerInfo]:
    """Probe all runners concurrently; order is kept."""
    env = dict(os.environ if environ is None else environ)

    def one(r: RunnerInfo) -> RunnerInfo:
        return (discover_docker(r, env) if r.engine == "docker"
                else discover_dagger(r, env, probe))

    if len(runners) == 1:
        return [one(runners[0])]
    with ThreadPoolExecutor(max_workers=min(8, len(runners))) as pool:
        return list(pool.map(one, runners))
