"""Predicted platform job times from earlier runs' step times (pure, no I/O).

`ci plan` shows each job's prediction and its basis; `prepare` refuses a run whose predicted
emulated seconds exceed `[emulation] budget_seconds` before any work starts. The history
records themselves live in `<state_dir>/history.json` (read and written by stages/history).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from statistics import median
from typing import Any, Literal

from pydantic import Field

from ci.core.data import Frozen
from ci.core.plan import Plan, PlatformJob
from ci.core.results import PlatformResult
from ci.core.verdict import CANCELLED_STEP, MODEL_STEP

HISTORY_SCHEMA = 1
HISTORY_RUNS = 20  # runs kept per (platform, placement kind, runner)
# emulated/native time when the history measures none (README: arm64 under qemu is 6-10x)
DEFAULT_EMULATION_FACTOR = 6.0
# the steps qemu slows down: the engines' own `emulated_seconds` is the sum of these
EMULATED_STEPS = ("build_test", "test", "build_release", "model_check")
TIMES = "\u00d7"  # the multiplication sign of a basis: "native TIMES 5.8 (measured)"

Kind = Literal["native", "emulated"]


class JobRecord(Frozen):
    """One finished platform job as the history keeps it: where it ran, how long each step took."""

    platform: str
    kind: Kind
    runner: str
    seconds: float
    emulated_seconds: float = 0.0
    steps: dict[str, float] = Field(default_factory=dict)
    outcome: Literal["passed", "failed", "error"]
    run_id: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.platform, self.kind, self.runner)

    @property
    def work(self) -> float:
        """The seconds of the steps emulation slows (everything but push and the like)."""
        return sum(self.steps.get(s, 0.0) for s in EMULATED_STEPS)


class History(Frozen):
    """The file `<state_dir>/history.json`: the last HISTORY_RUNS runs per job key."""

    schema_version: int = HISTORY_SCHEMA
    runs: list[JobRecord] = Field(default_factory=list)


class Prediction(Frozen):
    """A job's predicted total and emulated seconds (None: nothing to go by) and why."""

    seconds: float | None = None
    emulated_seconds: float | None = None
    basis: str = "no history"


def record_of(result: PlatformResult) -> JobRecord | None:
    """The history entry of a result; None when its time says nothing about the job (not run,
    cancelled by fail-fast, stopped by the model stage)."""
    if result.placement == "unavailable" or not result.durations:
        return None
    if result.failure and result.failure.step in (CANCELLED_STEP, MODEL_STEP):
        return None
    return JobRecord(platform=result.platform, kind=result.placement, runner=result.runner,
                     seconds=result.seconds, emulated_seconds=result.emulated_seconds,
                     steps=dict(result.durations), outcome=result.status, run_id=result.run_id)


def appended(runs: Sequence[JobRecord], new: Iterable[JobRecord],
             limit: int = HISTORY_RUNS) -> list[JobRecord]:
    """`runs` + `new`, keeping only the last `limit` of each (platform, kind, runner), in order."""
    every = [*runs, *new]
    seen: dict[tuple[str, str, str], int] = {}
    kept: list[JobRecord] = []
    for rec in reversed(every):
        seen[rec.key] = seen.get(rec.key, 0) + 1
        if seen[rec.key] <= limit:
            kept.append(rec)
    return kept[::-1]


def _passed(runs: Iterable[JobRecord], platform: str | None, kind: str) -> list[JobRecord]:
    return [r for r in runs if r.outcome == "passed" and r.kind == kind
            and (platform is None or r.platform == platform)]


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def emulation_factor(runs: Sequence[JobRecord]) -> tuple[float, bool]:
    """Emulated/native time of the emulated steps, from platforms the history saw both ways
    (the median over platforms); `(DEFAULT_EMULATION_FACTOR, False)` when none."""
    ratios = []
    for platform in sorted({r.platform for r in runs}):
        emulated = _passed(runs, platform, "emulated")
        native = [r.work for r in _passed(runs, platform, "native") if r.work > 0]
        if emulated and native:
            ratios.append(median(r.work for r in emulated) / median(native))
    if not ratios:
        return DEFAULT_EMULATION_FACTOR, False
    return median(ratios), True


def predict(platform: str, kind: str, runner: str | None,
            runs: Sequence[JobRecord]) -> Prediction:
    """The median of this job's own runs (same platform, kind and runner), else of the same
    platform and kind on other runners; an emulated job without either is its platform's
    native time (else other platforms') times the emulation factor."""
    if kind not in ("native", "emulated"):
        return Prediction(basis="not placed")
    same = _passed(runs, platform, kind)
    own = [r for r in same if r.runner == runner]
    for chosen, where in ((own, ""), (same, " on other runners")):
        if chosen:
            emulated = median(r.emulated_seconds for r in chosen) if kind == "emulated" else 0.0
            return Prediction(seconds=round(median(r.seconds for r in chosen), 1),
                              emulated_seconds=round(emulated, 1),
                              basis=f"median of {_runs(len(chosen))}{where}")
    if kind == "native":
        return Prediction()
    native, label = _passed(runs, platform, "native"), "native"
    if not native:
        native = _passed(runs, None, "native")
        others = sorted({r.platform for r in native})
        label = f"{others[0]} native" if len(others) == 1 else "other platforms' native"
    if not native:
        return Prediction()
    factor, measured = emulation_factor(runs)
    work = median(r.work for r in native) * factor
    rest = median(r.seconds - r.work for r in native)
    how = "measured" if measured else "default"
    return Prediction(seconds=round(work + max(rest, 0.0), 1), emulated_seconds=round(work, 1),
                      basis=f"{label} {TIMES} {round(factor, 1):g} ({how})")


def with_predictions(plan: Plan, runs: Sequence[JobRecord]) -> Plan:
    """The same plan, each job carrying its prediction (`prediction_basis` says from what)."""
    jobs = []
    for job in plan.jobs:
        p = predict(job.platform, job.placement.kind, job.placement.runner, runs)
        jobs.append(job.model_copy(update={
            "predicted_seconds": p.seconds, "predicted_emulated_seconds": p.emulated_seconds,
            "prediction_basis": p.basis}))
    return plan.model_copy(update={"jobs": jobs})


def _emulated(plan: Plan) -> list[PlatformJob]:
    return [j for j in plan.jobs
            if j.placement.kind == "emulated" and j.predicted_emulated_seconds is not None]


def unpredicted_emulated(plan: Plan) -> list[str]:
    """The emulated jobs without a prediction (their time is not in the predicted total)."""
    return [j.platform for j in plan.jobs
            if j.placement.kind == "emulated" and j.predicted_emulated_seconds is None]


def predicted_emulated_seconds(plan: Plan) -> float:
    """The predicted emulated seconds of the plan's emulated jobs that have a prediction."""
    return round(sum(j.predicted_emulated_seconds or 0.0 for j in _emulated(plan)), 1)


def budget_problem(plan: Plan) -> str | None:
    """The plan-time refusal when the predicted emulated seconds exceed the budget; None when
    they fit, nothing is predicted (no history) or there is no budget."""
    budget, total = plan.emulation_budget_seconds, predicted_emulated_seconds(plan)
    if budget is None or total <= budget:
        return None
    parts = ", ".join(f"{j.platform} ~{j.predicted_emulated_seconds:.0f} s {j.prediction_basis}"
                      for j in _emulated(plan))
    return (f"emulation budget: predicted {total:.0f} s emulated ({parts}) > {budget:g} s; "
            "add a native runner or raise [emulation] budget_seconds")


def prediction_lines(plan: Plan) -> list[str]:
    """`linux/arm64  emulated on local  ~41 s (median of 3 runs)` per placed job, then the
    predicted emulated total against the budget (plain text, for the console)."""
    lines = []
    for job in plan.jobs:
        p = job.placement
        if p.kind == "unavailable":
            continue
        when = f"~{job.predicted_seconds:.0f} s" if job.predicted_seconds is not None \
            else "no estimate"
        lines.append(f"{job.platform}  {p.kind} on {p.runner}  {when} "
                     f"({job.prediction_basis or 'not predicted'})")
    missing, budget = unpredicted_emulated(plan), plan.emulation_budget_seconds
    if _emulated(plan) or missing or budget is not None:
        total = f"emulated total ~{predicted_emulated_seconds(plan):.0f} s"
        if missing:
            total += f" + {', '.join(missing)} (no estimate)"
        of = f"budget {budget:g} s" if budget is not None else "no [emulation] budget_seconds"
        lines.append(f"{total} ({of})")
    return lines


def emulation_summary(plan: Plan) -> dict[str, Any]:
    """The plan's predicted emulated seconds, its budget and the refusal, for `ci plan --json`."""
    return {"predicted_seconds": predicted_emulated_seconds(plan),
            "unpredicted": unpredicted_emulated(plan),
            "budget_seconds": plan.emulation_budget_seconds,
            "refusal": budget_problem(plan)}
