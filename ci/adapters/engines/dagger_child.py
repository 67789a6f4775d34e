"""One Dagger session in its own process: `python -m ci.engines.dagger_child OUT.json < request`.

dagger-io's connection is process-wide, so each runner host gets a child process whose
environment routes the SDK (see ci.engines.dagger_routing). The request (JobSpecs, the
registry username and the NAME of the password variable, never the password) comes on
stdin as JSON; the PlatformResults, or one error, go to OUT.json.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ci.adapters.engines import dagger_session as ds
from ci.core.config import PublishConfig, RegistryAuth
from ci.core.errors import CIError, EngineError
from ci.core.redact import redact
from ci.core.results import JobSpec, PlatformResult

CHILD_SCHEMA = 1
__all__ = ["ChildError", "ChildRequest", "ChildResponse", "error_from", "main", "serve"]


class ChildRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = CHILD_SCHEMA
    runner: str
    host: str = ""
    capacity: int = 1
    specs: list[JobSpec]
    auth: RegistryAuth = Field(default_factory=RegistryAuth)
    insecure: bool = False
    cleanup_tmp_tags: bool = True
    connect_timeout: float = ds.DEFAULT_CONNECT_TIMEOUT
    index: bool = False


class ChildError(BaseModel):
    kind: str
    message: str


class ChildResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = CHILD_SCHEMA
    results: list[PlatformResult] = Field(default_factory=list)
    index: str | None = None
    error: ChildError | None = None


def _write(out: Path, response: ChildResponse) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(redact(response.model_dump_json()))
    tmp.replace(out)


async def serve(request: ChildRequest) -> ChildResponse:
    """Connect once to this child's engine and run its jobs (up to `capacity` at once)."""
    from ci.adapters.engines.dagger import DaggerEngine
    from ci.adapters.registry import Credentials, RegistryClient

    credentials = Credentials.from_config(request.auth, os.environ)
    registry = None
    if request.cleanup_tmp_tags and request.specs:
        publish = PublishConfig(auth=request.auth, insecure=request.insecure)
        registry = RegistryClient.for_image(request.specs[0].image, publish, os.environ)
    engine = DaggerEngine(request.runner, request.host, credentials=credentials,
                          registry=registry, connect_timeout=request.connect_timeout)
    watchdog = _watchdog(request)
    try:
        async with engine.session():
            watchdog.cancel()
            if request.index:
                results, index = await engine.run_jobs_one_engine(request.specs)
                return ChildResponse(results=results, index=index)
            slots: list[PlatformResult | None] = [None] * len(request.specs)
            limiter = anyio.CapacityLimiter(max(1, request.capacity))

            async def one(i: int, spec: JobSpec) -> None:
                async with limiter:
                    slots[i] = await engine.run_job(spec)

            async with anyio.create_task_group() as tg:
                for i, spec in enumerate(request.specs):
                    tg.start_soon(one, i, spec)
            return ChildResponse(results=[r for r in slots if r is not None])
    finally:
        watchdog.cancel()
        if registry is not None:
            registry.close()


_OUT: Path | None = None


def _watchdog(request: ChildRequest) -> threading.Timer:
    """The SDK waits for the CLI's session line without a timeout: bound it from outside."""

    def expire() -> None:
        if _OUT is not None:
            _write(_OUT, ChildResponse(error=ChildError(
                kind="EngineUnreachable",
                message=f"Dagger engine unreachable ({ds.where(request.host)}): no session "
                        f"within {request.connect_timeout:g} s")))
        os._exit(1)

    timer = threading.Timer(request.connect_timeout + 2, expire)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: list[str]) -> int:
    global _OUT
    if len(argv) != 1:
        sys.stderr.write("usage: python -m ci.engines.dagger_child OUT.json < request.json\n")
        return 2
    _OUT = out = Path(argv[0])
    try:
        request = ChildRequest.model_validate_json(sys.stdin.read())
        response = anyio.run(serve, request)
    except CIError as exc:
        _write(out, ChildResponse(error=ChildError(kind=type(exc).__name__, message=exc.message)))
        return 1
    except Exception as exc:  # reported to the parent as an engine error, then re-raised
        kind = EngineError.__name__
        _write(out, ChildResponse(error=ChildError(kind=kind, message=f"{type(exc).__name__}: "
                                                                      f"{exc}")))
        raise
    _write(out, response)
    return 0


def error_from(payload: dict[str, Any] | ChildError) -> CIError:
    """Rebuild the child's error as the same ci.errors class (EngineError if unknown)."""
    from ci.core import errors

    err = payload if isinstance(payload, ChildError) else ChildError(**payload)
    cls = getattr(errors, err.kind, None)
    if not (isinstance(cls, type) and issubclass(cls, CIError)):
        return EngineError(err.message)
    if issubclass(cls, errors.ConfigError):  # built from problems, not a message
        return errors.UsageError(err.message)
    return cls(err.message)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

