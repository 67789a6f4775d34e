"""The verdict: one JSON document deciding a release; publish reads only this (pure).

Every gate contributes data (platform results, the model gate, smoke results, emulation
budget) and `decide()` turns them into pass/fail with one reason per failed gate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import Field, PrivateAttr

from ci.core.data import Frozen
from ci.core.errors import GateFailed, PlatformError
from ci.core.model import ModelStageResult
from ci.core.platforms import parse as parse_platform
from ci.core.results import RESULT_SCHEMA, PlatformResult, SourceInfo
from ci.core.results import SmokeResult as SmokeResult  # re-exported: callers import it from here

VERDICT_SCHEMA = 1
MODEL_STEP = "model"  # FailureDetail.step of a platform job stopped because the model failed
CANCELLED_STEP = "cancelled"  # ... stopped because another platform failed first (fail-fast)



class ModelVerdict(Frozen):
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


class GateCheck(Frozen):
    """A gate a pipeline adds itself (its own stage's yes/no); its reason lands in the verdict."""

    name: str
    passed: bool
    reason: str = ""


class Verdict(Frozen):
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
    gates: list[GateCheck] = Field(default_factory=list)
    model_required: bool = True
    passed: bool
    reasons: list[str] = Field(default_factory=list)
    _permit: Permit | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        """Equal when the documents are equal (the permit is not part of the document)."""
        if not isinstance(other, Verdict):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    def permit(self) -> Permit:
        """The key to publish: only a verdict that `decide()` made and that passed has one.

        A verdict built by hand or read back from JSON never carries a permit, whatever its
        `passed` field says; a rejected one raises GateFailed naming its first reason.
        """
        if self._permit is not None and self.passed:
            return self._permit
        if not self.passed:
            first = self.reasons[0] if self.reasons else "a gate failed"
            more = f" (+{len(self.reasons) - 1} more reasons in the verdict)" \
                if len(self.reasons) > 1 else ""
            raise GateFailed(f"release rejected, nothing published: {first}{more}")
        raise GateFailed("nothing published: this verdict was not made by decide()")

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


class Permit:
    """Proof that every gate passed: made only inside `decide()`, required by publish.

    Publish, deploy and promote take a Permit, never a bare list of results, so the only way
    to move a tag is through the one function that weighs every gate.
    """

    __slots__ = ("_verdict",)

    def __init__(self, verdict: Verdict, key: object) -> None:
        if key is not _KEY or not verdict.passed:
            raise GateFailed("nothing published: a permit is made only by decide() for a "
                             "verdict that passed")
        self._verdict = verdict.model_copy(deep=True)  # later edits to the lists change nothing

    @property
    def verdict(self) -> Verdict:
        """A copy of the verdict as decide() made it (what publish and promote read)."""
        return self._verdict.model_copy(deep=True)

    def __repr__(self) -> str:
        return f"Permit(run_id={self._verdict.run_id!r})"


_KEY = object()


def _norm(platform: str) -> str:
    """`aarch64`, `arm64` and `linux/arm64/v8` are one platform; unparsable text stays as is."""
    try:
        return str(parse_platform(platform))
    except PlatformError:
        return platform


def set_problems(results: Sequence[PlatformResult], image: str = "") -> list[str]:
    """Why these results cannot form one release ([] when they can): mixed projects, images,
    commits or result schemas, or one platform reported twice."""
    problems: list[str] = []
    versions = sorted({r.schema_version for r in results})
    if results and versions != [RESULT_SCHEMA]:
        problems.append(f"result schema versions {versions}, this ci reads {RESULT_SCHEMA}")
    for label, values in (
        ("projects", {r.project for r in results}),
        ("images", {r.image for r in results} | ({image} if image and results else set())),
        ("source commits", {r.source.sha for r in results}),
    ):
        if len(values) > 1:
            problems.append(f"mixed {label}: {', '.join(sorted(v or '(none)' for v in values))}")
    counts = Counter(_norm(r.platform) for r in results)
    dupes = sorted(p for p, n in counts.items() if n > 1)
    if dupes:
        problems.append(f"duplicated platform(s): {', '.join(dupes)}")
    return problems


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
    gates: Sequence[GateCheck] = (),
) -> Verdict:
    """Combine every gate into one verdict; `passed` only if every gate passed.

    `stage_error` (a stage that could not decide, e.g. MLflow down) is read first;
    `extra_reasons` (notes such as skipped builds) come after the gates' own reasons;
    `gates` are the pipeline's own checks (each failed one gives `NAME: reason`).
    """
    reasons: list[str] = [f"results do not belong to one release: {p}"
                          for p in set_problems(platforms, image)]
    by_platform = {_norm(r.platform): r for r in platforms}
    expected_platforms = [_norm(p) for p in expected_platforms]
    said = bool(stage_error or extra_reasons)  # why jobs stopped is already said once
    skipped = not platforms and said
    cancelled: list[str] = []  # fail-fast victims: after the failure that caused them
    for p in expected_platforms:
        r = by_platform.get(p)
        if r is None:
            if not skipped:
                reasons.append(f"{p}: no result")
        elif not r.ok:
            if r.failure and r.failure.step == MODEL_STEP and said:
                continue  # the model stage's own reason says why; once is enough
            if r.failure and r.failure.step == CANCELLED_STEP:
                cancelled.append(f"{p}: {r.failure.message}")
                continue
            if r.failure:
                why = r.failure.message
            elif r.status == "passed":
                why = "no digest pushed"
            else:
                why = r.status
            reasons.append(f"{p}: {why}")
    reasons += cancelled
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
    for g in gates:
        if not g.passed:
            reasons.append(f"{g.name}: {g.reason or 'failed'}")
    reasons = [stage_error] * bool(stage_error) + reasons + list(extra_reasons or [])
    verdict = Verdict(
        run_id=run_id, project=project, image=image, created=created, source=source,
        expected_platforms=list(expected_platforms), platforms=list(platforms), model=model,
        smoke=list(smoke), emulated_seconds=emulated,
        emulation_budget_seconds=emulation_budget_seconds, gates=list(gates),
        model_required=model_required, passed=not reasons, reasons=reasons,
    )
    if verdict.passed:
        verdict._permit = Permit(verdict, _KEY)
    return verdict


def model_verdict_of(model: ModelStageResult) -> ModelVerdict:
    """The model stage's result as the verdict records it (`ci run` and `ci merge` alike)."""
    d = model.decision
    return ModelVerdict(
        registered_model=model.registered_model, alias=model.alias,
        run_id=model.training.run_id, candidate_version=model.version,
        champion_version=d.champion_version, passed=model.passed,
        reason="; ".join(d.reasons), reused_run=model.training.reused,
        metrics=dict(d.metrics), baseline=dict(d.baseline or {}), deltas=dict(d.deltas or {}),
        model_uri=model.model_uri or "",
    )
