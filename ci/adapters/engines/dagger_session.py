"""Connecting dagger-io to one engine without surprises: check first, bounded connect, no download.

Without DAGGER_SESSION_PORT/TOKEN (what `dagger run` hands its child) and without
_EXPERIMENTAL_DAGGER_CLI_BIN the SDK downloads a CLI from the internet, and by default it
retries a dead session forever. So we decide the route before the SDK runs, point the SDK at
a CLI found on PATH ourselves, and bound the connect: "no engine" is one clear line, fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypeVar

import anyio

from ci.core.errors import EngineError, EngineUnreachable, StepFailed, TestsFailed
from ci.core.redact import redact

SESSION_VARS = ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN")
CLI_VAR = "_EXPERIMENTAL_DAGGER_CLI_BIN"
RUNNER_VAR = "_EXPERIMENTAL_DAGGER_RUNNER_HOST"
DEFAULT_CONNECT_TIMEOUT = 20.0
CONNECT_ATTEMPTS = 3

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def has_session(environ: Mapping[str, str]) -> bool:
    """True when a `dagger run` parent left an open session to reuse."""
    return all(environ.get(v) for v in SESSION_VARS)


def cli_bin(environ: Mapping[str, str]) -> str | None:
    """The dagger CLI the SDK may start: _EXPERIMENTAL_DAGGER_CLI_BIN, else `dagger` on PATH."""
    given = environ.get(CLI_VAR)
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    return shutil.which("dagger", path=environ.get("PATH"))


def where(host: str) -> str:
    return f"runner host {host}" if host else "the default Dagger engine"


def check_reachable(environ: Mapping[str, str], host: str = "") -> None:
    """Raise EngineUnreachable (one line) unless the SDK has a way in that needs no download.

    The default engine is reached through a `dagger run` session or a CLI; a runner host
    always needs a CLI (a session belongs to the engine that made it).
    """
    if not host and has_session(environ):
        return
    if cli_bin(environ):
        return
    given = environ.get(CLI_VAR)
    bad = f"{CLI_VAR}={given} is not an executable file" if given else "no `dagger` CLI on PATH"
    how = (f"no DAGGER_SESSION_PORT/DAGGER_SESSION_TOKEN (run under `dagger run`) and {bad}"
           if not host else f"{bad} to open a session on it")
    raise EngineUnreachable(f"no Dagger engine reachable for {where(host)}: {how}")


def sdk_environ(environ: Mapping[str, str], host: str = "") -> dict[str, str]:
    """The environment the SDK must see to reach `host` ("" = the default engine)."""
    env = dict(environ)
    if host:
        for var in SESSION_VARS:
            env.pop(var, None)
        env[RUNNER_VAR] = host
    if not has_session(env):
        found = cli_bin(env)
        if found:
            env[CLI_VAR] = found
    return env


def bounded_retry(attempts: int = CONNECT_ATTEMPTS, delay: float = 0.3) -> Callable[[F], F]:
    """A connect retry for gql that gives up (gql's default retries forever)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(attempts):
                try:
                    return await fn(*args, **kwargs)
                except Exception:
                    if attempt == attempts - 1:
                        raise
                    await anyio.sleep(delay * (attempt + 1))
            return None

        return wrapper  # type: ignore[return-value]

    return decorate


@contextlib.contextmanager
def _applied(target: MutableMapping[str, str], env: Mapping[str, str]) -> Any:
    """Make os.environ match `env` for the SDK's reads, and restore it afterwards."""
    keys = (*SESSION_VARS, CLI_VAR, RUNNER_VAR)
    saved = {k: target.get(k) for k in keys}
    for key in keys:
        if env.get(key):
            target[key] = env[key]
        else:
            target.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value


@contextlib.asynccontextmanager
async def connect(
    environ: Mapping[str, str] | None = None,
    *,
    host: str = "",
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[None]:
    """Open the process-wide dagger-io connection to the default engine or to `host`.

    The SDK reads os.environ, so the chosen route is applied there for the connection's
    lifetime: one engine per process (see ci.engines.dagger_routing for several).
    """
    import dagger

    source = os.environ if environ is None else environ
    check_reachable(source, host)
    env = sdk_environ(source, host)
    config = dagger.Config(
        timeout=dagger.Timeout(None, connect=connect_timeout),
        retry=dagger.Retry(connect=bounded_retry(), execute=True),
    )
    with _applied(os.environ, env):
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(dagger.connection(config))
        except dagger.DaggerError as exc:
            await stack.aclose()
            await _reset_shared_connection()
            first = (str(exc).strip().splitlines() or ["no answer"])[-1]
            raise EngineUnreachable(
                f"Dagger engine unreachable ({where(host)}): {redact(first)[:300]}"
            ) from None
        try:
            yield
        finally:
            await stack.aclose()


async def _reset_shared_connection() -> None:
    """dagger-io 0.21 keeps a failed connect's half-made session in its process-wide shared
    connection, so every later connect in this process fails ('…has no attribute args');
    drop it (private SDK state, hence the guard) so the next connect starts clean."""
    try:
        from dagger.client._session import SharedConnection
    except ImportError:  # another SDK layout: nothing known to reset
        return
    shared = SharedConnection()
    with contextlib.suppress(Exception):
        await shared.close()
    SharedConnection._session = None
    SharedConnection._params = None


def step_failed(exc: Exception, step: str, platform: str) -> StepFailed:
    """dagger.ExecError → StepFailed (TestsFailed for the test step), keeping the exec's
    exit code, stdout and stderr; other query errors keep their message."""
    import dagger

    cls = TestsFailed if step == "test" else StepFailed
    if isinstance(exc, dagger.ExecError):
        stdout, stderr = redact(exc.stdout or ""), redact(exc.stderr or "")
        last = (stderr.strip() or stdout.strip() or exc.message).splitlines()[-1:] or [""]
        return cls(
            f"{step} failed on {platform} (exit {exc.exit_code}): {last[0][:300]}",
            step=step, cmd=list(exc.command), returncode=exc.exit_code,
            stdout=stdout, stderr=stderr,
        )
    return cls(f"{step} failed on {platform}: {redact(str(exc))[:300]}", step=step)


def engine_lost(exc: Exception, host: str) -> EngineError:
    """A transport error mid-run: the engine went away (not a failure of the job)."""
    return EngineError(f"lost the Dagger engine ({where(host)}): {redact(str(exc))[:300]}")
