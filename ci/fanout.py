"""Run platform jobs concurrently (anyio), bounded per runner, with the qemu fallback.

Each job runs on its placed runner through whatever `Engine` the caller's factory returns;
at most `capacity[runner]` jobs share a runner at once. An engine error becomes an `error`
result (data for the verdict) instead of tearing down the other jobs; Ctrl-C cancels all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from ci import platforms
from ci.engines.base import Engine
from ci.errors import CIError, EngineUnreachable, StepFailed
from ci.plan import Placement, RunnerInfo
from ci.results import FailureDetail, JobSpec, PlatformResult

EngineFactory = Callable[[JobSpec], Engine]
# (spec whose runner failed, the error, runners already tried) → a re-placed spec or None
Replacer = Callable[[JobSpec, EngineUnreachable, set[str]], JobSpec | None]


def error_result(spec: JobSpec, exc: CIError, engine: str) -> PlatformResult:
    """The result of a job whose engine broke (not a test failure)."""
    step = exc.step if isinstance(exc, StepFailed) and exc.step else "engine"
    detail = FailureDetail(
        step=step,
        message=exc.message,
        exit_code=exc.returncode if isinstance(exc, StepFailed) else None,
        stdout_tail=exc.stdout[-2000:] if isinstance(exc, StepFailed) else "",
        stderr_tail=exc.stderr[-2000:] if isinstance(exc, StepFailed) else "",
    )
    return PlatformResult(
        project=spec.project, image=spec.image, platform=spec.platform,
        runner=spec.placement.runner or "-", engine=engine, placement=spec.placement.kind,
        placement_reason=spec.placement.reason, status="error", failure=detail,
        source=spec.source, run_id=spec.run_id,
    )


def qemu_fallback(runners: Sequence[RunnerInfo], fallback: str) -> Replacer:
    """A Replacer that moves a job off an unreachable runner: native elsewhere, else qemu.

    With `fallback = "fail"` it never re-places (the job ends as an error result).
    """

    def replace(spec: JobSpec, exc: EngineUnreachable, tried: set[str]) -> JobSpec | None:
        if fallback != "qemu":
            return None
        platform = platforms.parse(spec.platform)
        engine = spec.placement.engine
        pool = [r for r in runners if r.reachable and r.name not in tried
                and (engine is None or r.engine == engine)]
        native = [r for r in pool if r.native_platform and platform.runs_on(r.native_platform)]
        emulating = [r for r in pool if r.can_emulate(platform)]
        chosen, kind = (native[0], "native") if native else (
            (emulating[0], "emulated") if emulating else (None, ""))
        if chosen is None:
            return None
        how = "native" if kind == "native" else f"qemu on {chosen.native}"
        reason = (f"runner {spec.placement.runner!r} unreachable at run time ({exc.message}); "
                  f"fell back to {chosen.name!r} ({how})")
        placement = Placement(kind=kind, runner=chosen.name, engine=chosen.engine,  # type: ignore[arg-type]
                              host=chosen.host, reason=reason)
        return spec.model_copy(update={"placement": placement})

    return replace


async def run_jobs(
    specs: Sequence[JobSpec],
    engine_for: EngineFactory,
    capacity: dict[str, int],
    *,
    replace: Replacer | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
) -> list[PlatformResult]:
    """Run every spec on its runner; results come back in the order of `specs`.

    `replace` (e.g. `qemu_fallback(plan.runners, plan.fallback)`) is asked for a new
    placement when a runner does not answer at run time.
    """
    limiters: dict[str, anyio.CapacityLimiter] = {
        name: anyio.CapacityLimiter(max(1, n)) for name, n in capacity.items()
    }
    results: list[PlatformResult | None] = [None] * len(specs)

    def limiter(spec: JobSpec) -> anyio.CapacityLimiter:
        name = spec.placement.runner or "-"
        if name not in limiters:
            limiters[name] = anyio.CapacityLimiter(1)
        return limiters[name]

    async def attempt(spec: JobSpec) -> PlatformResult:
        engine = engine_for(spec)
        async with limiter(spec):
            return await engine.run_job(spec)

    async def one(i: int, spec: JobSpec) -> None:
        tried: set[str] = set()
        current = spec
        while True:
            tried.add(current.placement.runner or "-")
            try:
                result = await attempt(current)
            except EngineUnreachable as exc:
                nxt = replace(current, exc, tried) if replace else None
                if nxt is None:
                    result = error_result(current, exc, current.placement.engine or "-")
                else:
                    current = nxt
                    continue
            except CIError as exc:
                result = error_result(current, exc, current.placement.engine or "-")
            break
        results[i] = result
        if on_result:
            on_result(result)

    async with anyio.create_task_group() as tg:
        for i, spec in enumerate(specs):
            tg.start_soon(one, i, spec)
    return [r for r in results if r is not None]
