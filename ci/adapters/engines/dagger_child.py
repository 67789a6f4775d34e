"""One Dagger session in its own process: `python -m ci.engines.dagger_child OUT.json < request`.

dagger-io's connection is process-wide, so each runner host gets a child process whose
environment routes the SDK (see ci.engines.dagger_routing). The request (JobSpecs, the
registry username and the NAME of the password variable, never the password) comes on
stdin as JSON; the PlatformResults, or one error (its ci.core.errors class and that class's
fields, see ChildError), go to OUT.json. A `probe` request runs no jobs: it asks the engine
its `defaultPlatform` and version (what the plan calls the runner's native platform).
A request with a `smoke` config has each passed platform smoke-tested in this same session
after its jobs (the engine that built an image runs it), the result carried in its
PlatformResult.
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
from ci.core import errors
from ci.core.config import PublishConfig, RegistryAuth, SmokeConfig
from ci.core.errors import (
    MISSING,
    CIError,
    ConfigError,
    ConfigProblem,
    EngineError,
    EngineUnreachable,
    StepFailed,
    TagMoveError,
)
from ci.core.redact import redact
from ci.core.results import JobSpec, PlatformResult

CHILD_SCHEMA = 4  # 2: ChildError carries the fields of its class; 3: probe requests; 4: smoke
OUTPUT_TAIL = 20_000  # characters of a failed step's stdout/stderr sent back to the parent
__all__ = ["ChildError", "ChildProblem", "ChildRequest", "ChildResponse", "error_from", "main", "serve"]


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
    probe: bool = False  # no jobs: answer the engine's defaultPlatform and version
    smoke: SmokeConfig | None = None  # smoke-test each passed platform in this session


class ChildProblem(BaseModel):
    """One ConfigProblem on the wire; the value travels as its repr (None: no value given)."""

    path: str
    value: str | None = None
    reason: str
    source: str = ""


class ChildError(BaseModel):
    """One CIError on the wire: its class name, message and the fields its class carries."""

    kind: str
    message: str
    step: str = ""  # StepFailed and subclasses
    cmd: list[str] = Field(default_factory=list)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    problems: list[ChildProblem] = Field(default_factory=list)  # ConfigError
    moved: list[str] = Field(default_factory=list)  # TagMoveError
    rolled_back: list[str] = Field(default_factory=list)
    not_moved: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, exc: CIError) -> ChildError:
        """The wire form of `exc`, secrets masked field by field (JSON escaping could hide them).

        `kind` is the nearest ci.core.errors class, so a private subclass still comes back typed.
        """
        kind = next(c for c in type(exc).__mro__ if c.__module__ == CIError.__module__)
        fields: dict[str, Any] = {"message": redact(exc.message)}
        if isinstance(exc, StepFailed):
            fields.update(step=redact(exc.step), cmd=[redact(c) for c in exc.cmd], returncode=exc.returncode,
                          stdout=_tail(exc.stdout), stderr=_tail(exc.stderr))
        if isinstance(exc, ConfigError):
            problems = [ChildProblem(path=p.path, value=_shown(p.value), reason=redact(p.reason),
                                     source=p.source) for p in exc.problems]
            # the message quotes the values: rebuilt from the masked ones, as the parent will
            fields.update(problems=problems, message=ConfigError(_problems(problems)).message)
        if isinstance(exc, TagMoveError):
            fields.update(moved=list(exc.moved), rolled_back=list(exc.rolled_back),
                          not_moved=list(exc.not_moved))
        return cls(kind=kind.__name__, **fields)


def _tail(text: str, limit: int = OUTPUT_TAIL) -> str:
    """Redacted, then cut to its last `limit` characters (a log can be megabytes)."""
    text = redact(text)
    return text if len(text) <= limit else text[-limit:]


def _shown(value: object) -> str | None:
    """A problem's value as the repr it prints with, masked before repr escapes a secret."""
    if value is MISSING:
        return None
    return repr(redact(value)) if isinstance(value, str) else redact(repr(value))


def _problems(problems: list[ChildProblem]) -> list[ConfigProblem]:
    return [ConfigProblem(p.path, MISSING if p.value is None else _Shown(p.value), p.reason, p.source)
            for p in problems]


class _Shown:
    """A ConfigProblem value rebuilt from its repr: prints exactly as the child's did."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class ChildResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = CHILD_SCHEMA
    results: list[PlatformResult] = Field(default_factory=list)
    index: str | None = None
    platform: str | None = None  # a probe's answer: the engine's defaultPlatform
    version: str = ""
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
                          registry=registry, connect_timeout=request.connect_timeout,
                          smoke=request.smoke)
    watchdog = _watchdog(request)
    try:
        async with engine.session():
            watchdog.cancel()
            if request.probe:
                return await _probe(request.host)
            if request.index:
                results, index = await engine.run_jobs_one_engine(request.specs)
                results = await engine.smoke_passed(request.specs, results)
                return ChildResponse(results=results, index=index)
            slots: list[PlatformResult | None] = [None] * len(request.specs)
            limiter = anyio.CapacityLimiter(max(1, request.capacity))

            async def one(i: int, spec: JobSpec) -> None:
                async with limiter:
                    slots[i] = await engine.run_job(spec)

            async with anyio.create_task_group() as tg:
                for i, spec in enumerate(request.specs):
                    tg.start_soon(one, i, spec)
            done = [r for r in slots if r is not None]
            return ChildResponse(results=await engine.smoke_passed(request.specs, done))
    finally:
        watchdog.cancel()
        if registry is not None:
            registry.close()


async def _probe(host: str) -> ChildResponse:
    """The connected engine's own word on its platform (and its version)."""
    import dagger
    from dagger import dag

    try:
        platform = str(await dag.default_platform())
        version = await dag.version()
    except dagger.DaggerError as exc:
        raise EngineError(f"Dagger engine ({ds.where(host)}) did not answer defaultPlatform: "
                          f"{redact(str(exc)).strip()[:300]}") from None
    return ChildResponse(platform=platform, version=version)


_OUT: Path | None = None


def _watchdog(request: ChildRequest) -> threading.Timer:
    """The SDK waits for the CLI's session line without a timeout: bound it from outside."""

    def expire() -> None:
        if _OUT is not None:
            _write(_OUT, ChildResponse(error=ChildError.of(EngineUnreachable(
                f"Dagger engine unreachable ({ds.where(request.host)}): no session "
                f"within {request.connect_timeout:g} s"))))
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
        _write(out, ChildResponse(error=ChildError.of(exc)))
        return 1
    except Exception as exc:  # reported to the parent as an engine error, then re-raised
        _write(out, ChildResponse(error=ChildError.of(EngineError(f"{type(exc).__name__}: {exc}"))))
        raise
    _write(out, response)
    return 0


def error_from(payload: dict[str, Any] | ChildError) -> CIError:
    """Rebuild the child's error as the same ci.core.errors class, fields included.

    An unknown kind (or one this side cannot build) becomes an EngineError with the message.
    """
    err = payload if isinstance(payload, ChildError) else ChildError.model_validate(payload)
    cls = getattr(errors, err.kind, None)
    if not (isinstance(cls, type) and issubclass(cls, CIError)):
        return EngineError(err.message)
    if issubclass(cls, ConfigError):  # built from problems, not a message
        if not err.problems:
            return errors.UsageError(err.message)
        return cls(_problems(err.problems))
    if issubclass(cls, StepFailed):
        return cls(err.message, step=err.step, cmd=err.cmd, returncode=err.returncode,
                   stdout=err.stdout, stderr=err.stderr)
    if issubclass(cls, TagMoveError):
        return cls(err.message, moved=err.moved, rolled_back=err.rolled_back, not_moved=err.not_moved)
    try:
        return cls(err.message)
    except TypeError:  # a class whose fields this wire form does not carry
        return EngineError(f"{err.kind}: {err.message}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

