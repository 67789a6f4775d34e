"""Route platform jobs to Dagger engines: one child process (one SDK session) per runner host.

dagger-io's connection is process-wide, so every runner host (tcp://, unix://, kube-pod://,
ssh://, image://...) gets its own `python -m ci.engines.dagger_child` with
_EXPERIMENTAL_DAGGER_RUNNER_HOST set for it; the default engine's child has no runner host
and reuses a `dagger run` session when there is one. Placements come from the plan
(native, or emulated on the default engine when the fallback allows); the results are the
same PlatformResults the Docker engine returns, merged by `ci.publish` (with [smoke], each
passed one carries the smoke test its child ran in the same session). At plan time
`probe_engine` asks each engine its defaultPlatform the same way, in a short child of its own.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio

from ci.adapters import proc
from ci.adapters.engines import dagger_session as ds
from ci.adapters.engines.dagger_child import CHILD_SCHEMA, ChildRequest, ChildResponse, error_from
from ci.adapters.engines.dagger_smoke import budget
from ci.core.config import RegistryAuth, SmokeConfig
from ci.core.errors import EngineError, EngineUnreachable, PlanUnavailable, StepFailed, UsageError
from ci.core.plan import DEFAULT_RUNNER, RunnerInfo
from ci.core.results import JobSpec, PlatformResult

BUILD_BUDGET = 3600.0  # seconds per job on top of its test timeout, for the child's deadline
PROBE_TIMEOUT = 10.0  # plan time: connect timeout of a defaultPlatform probe
PROBE_BUDGET = 10.0  # on top of it: the child's start, the SDK's import, two small queries
Replacer = Callable[[JobSpec, EngineUnreachable, set[str]], JobSpec | None]


@dataclass(frozen=True)
class Options:
    """How children connect and publish (the same for every runner host)."""

    auth: RegistryAuth = field(default_factory=RegistryAuth)
    insecure: bool = False
    cleanup_tmp_tags: bool = True
    connect_timeout: float = ds.DEFAULT_CONNECT_TIMEOUT
    python: str = sys.executable
    smoke: SmokeConfig | None = None  # each child smoke-tests its passed platforms


@dataclass
class RunnerGroup:
    """The jobs of one runner host: they share one child process and one session."""

    runner: str
    host: str
    capacity: int = 1
    jobs: list[tuple[int, JobSpec]] = field(default_factory=list)


def group_by_runner(
    specs: Sequence[tuple[int, JobSpec]], runners: Sequence[RunnerInfo]
) -> list[RunnerGroup]:
    """Group placed specs by runner host, in first-seen order (pure)."""
    by_name = {r.name: r for r in runners}
    groups: dict[str, RunnerGroup] = {}
    for i, spec in specs:
        placement = spec.placement
        if placement.kind == "unavailable":
            raise PlanUnavailable(f"{spec.platform}: {placement.reason}")
        if placement.engine not in (None, "dagger"):
            raise UsageError(f"{spec.platform} is placed on the {placement.engine} engine, "
                             "not dagger")
        info = by_name.get(placement.runner or "")
        host = info.host if info else placement.host
        name = placement.runner or (info.name if info else DEFAULT_RUNNER)
        group = groups.setdefault(host, RunnerGroup(name, host, info.capacity if info else 1))
        group.jobs.append((i, spec))
    return list(groups.values())


def child_environ(environ: Mapping[str, str], host: str) -> dict[str, str]:
    """The child's environment: routed SDK variables, unbuffered output."""
    env = ds.sdk_environ(environ, host)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_groups(groups: Sequence[RunnerGroup], environ: Mapping[str, str]) -> None:
    """Fail fast, before any child starts, when a group has no way to reach its engine."""
    for group in groups:
        ds.check_reachable(environ, group.host)


def _deadline(group: RunnerGroup, options: Options) -> float:
    smoke = budget(options.smoke) if options.smoke is not None else 0.0
    return options.connect_timeout + sum(s.test_timeout + BUILD_BUDGET + smoke
                                         for _, s in group.jobs)


def _call_child(request: ChildRequest, environ: Mapping[str, str], python: str,
                deadline: float, log_dirs: Sequence[str] = ()) -> ChildResponse:
    """Start one child for `request.host`, wait for it (blocking) and read its response;
    its error comes back as the same ci.core.errors class. Its output goes to `log_dirs`."""
    where = ds.where(request.host)
    with tempfile.TemporaryDirectory(prefix="maci-dagger-") as tmp:
        out = Path(tmp) / "response.json"
        try:
            res = proc.run(
                [python, "-m", "ci.adapters.engines.dagger_child", str(out)],
                env=child_environ(environ, request.host), input=request.model_dump_json(),
                timeout=deadline, check=False, step=f"dagger session ({where})",
            )
        except StepFailed as exc:  # the child's deadline passed
            raise EngineError(exc.message) from None
        for folder in log_dirs:
            log = Path(folder)
            log.mkdir(parents=True, exist_ok=True)
            (log / "dagger-session.log").write_text(res.stdout + res.stderr)
        if not out.is_file():
            tail = (res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[-1]
            raise EngineError(f"Dagger child for {where} exited "
                              f"{res.returncode} without a result: {tail[:300]}")
        response = ChildResponse.model_validate_json(out.read_text())
    if response.schema_version != CHILD_SCHEMA:  # a child of another version: its errors would not map
        raise EngineError(f"Dagger child for {where} wrote response schema "
                          f"{response.schema_version}, expected {CHILD_SCHEMA}")
    if response.error is not None:
        raise error_from(response.error)  # the same ci.core.errors class, fields included
    return response


def _run_child(group: RunnerGroup, environ: Mapping[str, str], options: Options,
               index: bool) -> ChildResponse:
    """Start the child for one runner host and read its response (blocking)."""
    request = ChildRequest(
        runner=group.runner, host=group.host, capacity=group.capacity,
        specs=[s for _, s in group.jobs], auth=options.auth, insecure=options.insecure,
        cleanup_tmp_tags=options.cleanup_tmp_tags, connect_timeout=options.connect_timeout,
        index=index, smoke=options.smoke,
    )
    response = _call_child(request, environ, options.python, _deadline(group, options),
                           [s.output_dir for _, s in group.jobs])
    if len(response.results) != len(group.jobs):
        raise EngineError(f"Dagger child for {ds.where(group.host)} returned "
                          f"{len(response.results)} results for {len(group.jobs)} jobs")
    return response


def probe_engine(host: str, environ: Mapping[str, str], *,
                 connect_timeout: float = PROBE_TIMEOUT,
                 python: str = sys.executable) -> ChildResponse:
    """Ask the engine at `host` ("" = the default engine, or the `dagger run` session) its
    defaultPlatform and version, in a short session of its own process (blocking).

    Raises EngineUnreachable (no way in, or no session within `connect_timeout`) or
    EngineError; the response's `platform` is the engine's answer.
    """
    ds.check_reachable(environ, host)
    request = ChildRequest(runner=host or DEFAULT_RUNNER, host=host, specs=[], probe=True,
                           cleanup_tmp_tags=False, connect_timeout=connect_timeout)
    return _call_child(request, environ, python, connect_timeout + PROBE_BUDGET)


async def run_group(group: RunnerGroup, environ: Mapping[str, str], options: Options,
                    *, index: bool = False) -> ChildResponse:
    """One runner host's jobs in its own process (the event loop stays free meanwhile)."""
    return await anyio.to_thread.run_sync(
        partial(_run_child, group, environ, options, index), abandon_on_cancel=True)


async def _run_all(groups: Sequence[RunnerGroup], environ: Mapping[str, str], options: Options
                   ) -> list[ChildResponse | EngineUnreachable]:
    """Every runner host's child at once; an unreachable engine is an outcome, not a crash."""
    outcomes: list[ChildResponse | EngineUnreachable | None] = [None] * len(groups)

    async def one(k: int, group: RunnerGroup) -> None:
        try:
            outcomes[k] = await run_group(group, environ, options)
        except EngineUnreachable as exc:
            outcomes[k] = exc

    async with anyio.create_task_group() as tg:
        for k, group in enumerate(groups):
            tg.start_soon(one, k, group)
    return [o for o in outcomes if o is not None]


async def run_jobs_dagger(
    specs: Sequence[JobSpec],
    runners: Sequence[RunnerInfo],
    environ: Mapping[str, str],
    *,
    options: Options | None = None,
    replace: Replacer | None = None,
) -> list[PlatformResult]:
    """Run every spec on its placed Dagger engine; results come back in the order of `specs`.

    Raises EngineUnreachable at once (nothing started) when an engine has no way in, or
    when no engine answered at all; a runner that fails at run time is re-placed through
    `replace` (e.g. `ci.fanout.qemu_fallback(plan.runners, plan.fallback)`) or reported as
    an `error` result.
    """
    from ci.core.placement import error_result

    opts = options or Options()
    results: list[PlatformResult | None] = [None] * len(specs)
    tried: dict[int, set[str]] = {i: set() for i in range(len(specs))}
    pending = list(enumerate(specs))
    first_round = True
    while pending:
        groups = group_by_runner(pending, runners)
        check_groups(groups, environ)
        outcomes = await _run_all(groups, environ, opts)
        down = [o for o in outcomes if isinstance(o, EngineUnreachable)]
        if first_round and len(down) == len(groups) and replace is None:
            raise down[0]
        first_round, pending = False, []
        for group, outcome in zip(groups, outcomes, strict=True):
            if isinstance(outcome, ChildResponse):
                for (i, _), result in zip(group.jobs, outcome.results, strict=True):
                    results[i] = result
                continue
            for i, spec in group.jobs:
                tried[i].add(group.runner)
                moved = replace(spec, outcome, tried[i]) if replace else None
                if moved is not None and moved.placement.runner not in tried[i]:
                    pending.append((i, moved))
                else:
                    results[i] = error_result(spec, outcome, "dagger")
    return [r for r in results if r is not None]


def run_jobs_dagger_sync(
    specs: Sequence[JobSpec],
    runners: Sequence[RunnerInfo],
    environ: Mapping[str, str],
    **kwargs: object,
) -> list[PlatformResult]:
    """`run_jobs_dagger` for synchronous callers (the CLI)."""
    return anyio.run(partial(run_jobs_dagger, specs, runners, environ, **kwargs))  # type: ignore[arg-type]


async def run_single_engine_dagger(
    specs: Sequence[JobSpec],
    environ: Mapping[str, str],
    *,
    runner: RunnerInfo | None = None,
    options: Options | None = None,
) -> tuple[list[PlatformResult], str | None]:
    """Every platform on ONE engine (default or `runner`), and the multi-platform image in one
    `publish(platform_variants=...)` call under a temporary tag; returns results and that ref."""
    runners = [runner] if runner else []
    placed = [
        (i, s.model_copy(update={"placement": s.placement.model_copy(
            update={"runner": runner.name if runner else s.placement.runner,
                    "host": runner.host if runner else ""})}))
        for i, s in enumerate(specs)
    ]
    groups = group_by_runner(placed, runners)
    if len(groups) != 1:
        raise UsageError("a single-engine publish needs every platform on one Dagger engine")
    check_groups(groups, environ)
    response = await run_group(groups[0], environ, options or Options(), index=True)
    return response.results, response.index


class DaggerChildEngine:
    """The Engine port for `ci.fanout.run_jobs`: each job in a child on its runner host.

    One session per job (the batch `run_jobs_dagger` shares one per host); use it when the
    orchestrator wants per-job retries and capacity limits from fanout.
    """

    name = "dagger"

    def __init__(self, runners: Sequence[RunnerInfo], environ: Mapping[str, str],
                 options: Options | None = None) -> None:
        self.runners, self.environ, self.options = list(runners), environ, options or Options()

    async def run_job(self, spec: JobSpec) -> PlatformResult:
        groups = group_by_runner([(0, spec)], self.runners)
        check_groups(groups, self.environ)
        return (await run_group(groups[0], self.environ, self.options)).results[0]
