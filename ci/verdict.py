"""The verdict: one JSON document deciding a release; publish reads only this (pure).

Every gate contributes data (platform results, the model gate, smoke results, emulation
budget) and `decide()` turns them into pass/fail with one reason per failed gate.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ci.results import PlatformResult, SourceInfo

VERDICT_SCHEMA = 1
MODEL_STEP = "model"  # FailureDetail.step of a platform job stopped because the model failed


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelVerdict(_Data):
    """The model gate's decision as the verdict records it."""

    registered_model: str
    alias: str
    run_id: str
    candidate_version: str | None = None
    champion_version: str | None = None
    passed: bool
    reason: str = ""
    reused_run: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline: dict[str, float] = Field(default_factory=dict)
    deltas: dict[str, float] = Field(default_factory=dict)
    model_uri: str = ""


class SmokeResult(_Data):
    """Load test of one platform's serving image (run by digest, before any tag moves)."""

    platform: str
    placement: Literal["native", "emulated", "unavailable"]
    reference: str
    requests: int
    errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    bound_ms: float
    max_error_rate: float
    passed: bool
    reason: str = ""
    seconds: float = 0.0


class Verdict(_Data):
    schema_version: int = VERDICT_SCHEMA
    run_id: str
    project: str
    image: str
    created: str
    source: SourceInfo
    expected_platforms: list[str]
    platforms: list[PlatformResult]
    model: ModelVerdict | None = None
    smoke: list[SmokeResult] = Field(default_factory=list)
    emulated_seconds: float = 0.0
    emulation_budget_seconds: float | None = None
    passed: bool
    reasons: list[str] = Field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A short, notification-sized view."""
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "platforms": {
                r.platform: {"status": r.status, "placement": r.placement, "seconds": r.seconds}
                for r in self.platforms
            },
            "model": (
                {"version": self.model.candidate_version, "passed": self.model.passed}
                if self.model else None
            ),
        }


def decide(
    *,
    run_id: str,
    project: str,
    image: str,
    created: str,
    source: SourceInfo,
    expected_platforms: list[str],
    platforms: list[PlatformResult],
    model: ModelVerdict | None,
    model_required: bool,
    smoke: list[SmokeResult],
    smoke_required: bool,
    emulation_budget_seconds: float | None,
    stage_error: str = "",
    extra_reasons: list[str] | None = None,
) -> Verdict:
    """Combine every gate into one verdict; `passed` only if every gate passed.

    `stage_error` (a stage that could not decide, e.g. MLflow down) is read first;
    `extra_reasons` (notes such as skipped builds) come after the gates' own reasons.
    """
    reasons: list[str] = []
    by_platform = {r.platform: r for r in platforms}
    said = bool(stage_error or extra_reasons)  # why jobs stopped is already said once
    skipped = not platforms and said
    for p in expected_platforms:
        r = by_platform.get(p)
        if r is None:
            if not skipped:
                reasons.append(f"{p}: no result")
        elif not r.ok:
            if r.failure and r.failure.step == MODEL_STEP and said:
                continue  # the model stage's own reason says why; once is enough
            if r.failure:
                why = r.failure.message
            elif r.status == "passed":
                why = "no digest pushed"
            else:
                why = r.status
            reasons.append(f"{p}: {why}")
    for p in sorted(set(by_platform) - set(expected_platforms)):
        reasons.append(f"{p}: unexpected platform result")
    if model_required and model is None:
        reasons.append("model: no gate decision")
    elif model is not None and not model.passed:
        reasons.append(f"model gate: {model.reason or 'failed'}")
    if smoke_required:
        smoked = {s.platform for s in smoke}
        for p in expected_platforms:
            if p not in smoked and by_platform.get(p) is not None and by_platform[p].ok:
                reasons.append(f"{p}: smoke test did not run")
    for s in smoke:
        if not s.passed:
            reasons.append(f"{s.platform}: smoke: {s.reason or 'failed'}")
    emulated = round(sum(r.emulated_seconds for r in platforms), 3)
    if emulation_budget_seconds is not None and emulated > emulation_budget_seconds:
        reasons.append(
            f"emulation budget: {emulated:.0f} s emulated > {emulation_budget_seconds:g} s"
        )
    reasons = [stage_error] * bool(stage_error) + reasons + list(extra_reasons or [])
    return Verdict(
        run_id=run_id, project=project, image=image, created=created, source=source,
        expected_platforms=list(expected_platforms), platforms=list(platforms), model=model,
        smoke=list(smoke), emulated_seconds=emulated,
        emulation_budget_seconds=emulation_budget_seconds, passed=not reasons, reasons=reasons,
    )
