"""Run-time re-placement and engine-error results (pure): what happens to a platform job
whose runner does not answer, and how a broken engine becomes data for the verdict."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ci.core import platforms
from ci.core.errors import CIError, EngineUnreachable, StepFailed
from ci.core.plan import Placement, RunnerInfo
from ci.core.redact import redact
from ci.core.results import FailureDetail, JobSpec, PlatformResult

# (spec whose runner failed, the error, runners already tried) → a re-placed spec or None
Replacer = Callable[[JobSpec, EngineUnreachable, set[str]], JobSpec | None]


def error_result(spec: JobSpec, exc: CIError, engine: str) -> PlatformResult:
    """The result of a job whose engine broke (not a test failure)."""
    step = exc.step if isinstance(exc, StepFailed) and exc.step else "engine"
    detail = FailureDetail(
        step=step,
        message=exc.message,
        exit_code=exc.returncode if isinstance(exc, StepFailed) else None,
        command=[redact(str(c)) for c in exc.cmd] if isinstance(exc, StepFailed) else [],
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
