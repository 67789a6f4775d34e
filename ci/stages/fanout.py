"""Run platform jobs concurrently (anyio), bounded per runner, with the qemu fallback.

Each job runs on its placed runner through whatever `Engine` the caller's factory returns;
at most `capacity[runner]` jobs share a runner at once. An engine error becomes an `error`
result (data for the verdict) instead of tearing down the other jobs; Ctrl-C cancels all.
With `fail_fast` the first platform that does not pass cancels the others (the release can
no longer pass): each ends as a failed "cancelled: <platform> failed first" result, and its
engine's cancel cleanup removes its test container.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio

from ci.adapters.registry import RegistryClient
from ci.core.config import Config
from ci.core.errors import CIError, EngineUnreachable, StepFailed, UsageError
from ci.core.placement import Replacer, error_result, qemu_fallback
from ci.core.ports import EngineFactory
from ci.core.results import JobSpec, PlatformResult
from ci.core.verdict import CANCELLED_STEP, MODEL_STEP
from ci.stages import history
from ci.stages.prepare import Prepared


def runner_limiters(capacity: Mapping[str, int]) -> Callable[[str], anyio.CapacityLimiter]:
    """One CapacityLimiter per runner name (at least 1; a runner the plan does not list
    gets 1): the bound of its platform jobs, and of its smoke tests."""
    limiters = {name: anyio.CapacityLimiter(max(1, n)) for name, n in capacity.items()}

    def limiter(name: str) -> anyio.CapacityLimiter:
        if name not in limiters:
            limiters[name] = anyio.CapacityLimiter(1)
        return limiters[name]

    return limiter


async def run_jobs(
    specs: Sequence[JobSpec],
    engine_for: EngineFactory,
    capacity: dict[str, int],
    *,
    replace: Replacer | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
    fail_fast: bool = True,
) -> list[PlatformResult]:
    """Run every spec on its runner; results come back in the order of `specs`.

    `replace` (e.g. `qemu_fallback(plan.runners, plan.fallback)`) is asked for a new
    placement when a runner does not answer at run time; `fail_fast` cancels the other
    jobs once one did not pass.
    """
    limiter = runner_limiters(capacity)
    results: list[PlatformResult | None] = [None] * len(specs)
    scopes = [anyio.CancelScope() for _ in specs]
    first: list[PlatformResult] = []  # the result that failed first

    async def attempt(spec: JobSpec) -> PlatformResult:
        engine = engine_for(spec)
        async with limiter(spec.placement.runner or "-"):
            return await engine.run_job(spec)

    async def placed(spec: JobSpec) -> PlatformResult:
        tried: set[str] = set()
        current = spec
        while True:
            tried.add(current.placement.runner or "-")
            try:
                return await attempt(current)
            except EngineUnreachable as exc:
                nxt = replace(current, exc, tried) if replace else None
                if nxt is None:
                    return error_result(current, exc, current.placement.engine or "-")
                current = nxt
            except CIError as exc:
                return error_result(current, exc, current.placement.engine or "-")

    async def one(i: int, spec: JobSpec) -> None:
        result: PlatformResult | None = None
        with scopes[i]:
            result = await placed(spec)
        if result is None:  # cancelled by fail-fast (a Ctrl-C propagates out of the scope)
            result = cancelled_result(spec, first[0])
        elif fail_fast and result.status != "passed" and not first:
            first.append(result)
            for j, scope in enumerate(scopes):
                if j != i:
                    scope.cancel()
        results[i] = result
        if on_result:
            on_result(result)

    async with anyio.create_task_group() as tg:
        for i, spec in enumerate(specs):
            tg.start_soon(one, i, spec)
    return [r for r in results if r is not None]


def configured_fail_fast(config: Config) -> bool:
    """`[test] fail_fast` (default true): the first failed platform cancels the others."""
    return config.test.fail_fast


def cancelled_result(spec: JobSpec, failed: PlatformResult) -> PlatformResult:
    """The result of a job fail-fast cancelled: failed (never passed), naming who failed
    first; a job stopped by the model stage passes that reason on (said once, as the model's)."""
    engine = spec.placement.engine or "-"
    if failed.failure and failed.failure.step == MODEL_STEP:  # what the job would have got
        return error_result(spec, StepFailed(failed.failure.message, step=MODEL_STEP), engine)
    exc = StepFailed(f"cancelled: {failed.platform} failed first", step=CANCELLED_STEP)
    return error_result(spec, exc, engine).model_copy(update={"status": "failed"})


BeforeRelease = Callable[[JobSpec], Awaitable[JobSpec]]


def engine_factory(
    name: str, registry: RegistryClient | None, *, push: bool,
    environ: Mapping[str, str] | None = None, before_release: BeforeRelease | None = None,
) -> EngineFactory:
    """The per-spec engine factory for an engine name (the one place engines are chosen)."""
    if name == "docker":
        from ci.adapters.engines.docker import engine_factory as docker_factory

        return docker_factory(registry, push=push, environ=environ,
                              before_release=before_release)
    raise UsageError(f"--engine {name!r}: only 'docker' runs platform jobs in this command")


def execute(
    prepared: Prepared,
    config: Config,
    *,
    engine: str = "docker",
    push: bool = True,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
    factory: EngineFactory | None = None,
    fail_fast: bool | None = None,
) -> list[PlatformResult]:
    """Run all specs concurrently on their runners (bounded by each runner's capacity)."""
    return anyio.run(lambda: execute_async(prepared, config, engine=engine, push=push,
                                           environ=environ, on_result=on_result,
                                           factory=factory, fail_fast=fail_fast))


async def execute_async(
    prepared: Prepared,
    config: Config,
    *,
    engine: str = "docker",
    push: bool = True,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
    before_release: BeforeRelease | None = None,
    factory: EngineFactory | None = None,
    fail_fast: bool | None = None,
) -> list[PlatformResult]:
    """`execute` inside a running event loop (so other stages can run beside the jobs).

    `factory` replaces the real engines (a test's in-memory engine); by default the named
    engine pushes to the configured registry. `fail_fast` None: the config's (default on).
    """
    env = dict(os.environ if environ is None else environ)
    registry = None
    if factory is None:
        registry = RegistryClient.for_image(config.project.image, config.publish, env) \
            if push else None
        factory = engine_factory(engine, registry, push=push, environ=env,
                                 before_release=before_release)
    capacity = {r.name: r.capacity for r in prepared.plan.runners}
    replace = qemu_fallback(prepared.plan.runners, prepared.plan.fallback)
    try:
        results = await run_jobs(prepared.specs, factory, capacity, replace=replace,
                                 on_result=on_result,
                                 fail_fast=configured_fail_fast(config) if fail_fast is None
                                 else fail_fast)
    finally:
        if registry:
            registry.close()
    history.record(config.state_path, results)  # the step times the next plan predicts from
    return results


def execute_dagger(prepared: Prepared, config: Config,
                   environ: Mapping[str, str]) -> list[PlatformResult]:
    """Every spec through Dagger: one session (child process) per runner host, which also
    smoke-tests its passed platforms when [smoke] is configured (see PlatformResult.smoke)."""
    from ci.adapters.engines.dagger_routing import Options, run_jobs_dagger_sync

    plan = prepared.plan
    results = run_jobs_dagger_sync(
        prepared.specs, plan.runners, dict(environ),
        options=Options(auth=config.publish.auth, insecure=config.publish.insecure,
                        smoke=config.smoke),
        replace=qemu_fallback(plan.runners, plan.fallback),
    )
    history.record(config.state_path, results)
    return results
