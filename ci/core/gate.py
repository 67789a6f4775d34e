"""The model gate: the candidate's metrics vs the champion's, judged by MLflow itself.

The checks are MLflow's `validate_evaluation_results` with `MetricThreshold`s built from
config (no re-implementation); this module only decides which bounds apply (no champion →
absolute thresholds only) and turns MLflow's verdict into `GateDecision` data for the
release verdict and for tags on the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from pydantic import Field

from ci.core.config import MetricThresholdConfig
from ci.core.data import Frozen

# MLflow's validation as a function (adapters.mlflow_gate.mlflow_failures): bounds, candidate
# metrics, baseline metrics or None, the two run ids → its failure lines ([] = passed).
Check = Callable[
    [Mapping[str, "Bounds"], Mapping[str, float], Mapping[str, float] | None, str, str], list[str]]

TAG_PREFIX = "maci.gate"
TAG_VALUE_LIMIT = 5000  # MLflow caps tag values (8000 chars on sqlite); keep a margin


class Bounds(Frozen):
    """The bounds of one metric that apply to this comparison (MetricThreshold's arguments)."""

    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool = True

    def describe(self) -> str:
        arrow = ">=" if self.greater_is_better else "<="
        parts = []
        if self.threshold is not None:
            parts.append(f"{arrow} {self.threshold:g}")
        if self.min_absolute_change is not None:
            parts.append(f"{'+' if self.greater_is_better else '-'}{self.min_absolute_change:g}"
                         " vs champion")
        if self.min_relative_change is not None:
            if self.min_relative_change == 0:
                parts.append("no worse than champion")
            else:
                parts.append(f"{'+' if self.greater_is_better else '-'}"
                             f"{self.min_relative_change:.1%} vs champion")
        return ", ".join(parts)


class MetricCheck(Frozen):
    metric: str
    candidate: float | None
    baseline: float | None = None
    delta: float | None = None
    bounds: str = ""
    passed: bool
    reason: str = ""


class GateDecision(Frozen):
    """The gate's answer as data: what the release verdict embeds and the run's tags record."""

    passed: bool
    candidate_run_id: str
    alias: str
    champion_version: str | None = None
    champion_run_id: str | None = None
    compared_with_champion: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)
    baseline: dict[str, float] = Field(default_factory=dict)
    deltas: dict[str, float] = Field(default_factory=dict)
    checks: list[MetricCheck] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def tags(self) -> dict[str, str]:
        """The decision as MLflow tags (`maci.gate*`), small enough for any tracking store."""
        tags = {
            TAG_PREFIX: self.status,
            f"{TAG_PREFIX}.alias": self.alias,
            f"{TAG_PREFIX}.champion_version": self.champion_version or "",
            f"{TAG_PREFIX}.compared_with_champion": str(self.compared_with_champion).lower(),
            f"{TAG_PREFIX}.deltas": json.dumps(self.deltas, sort_keys=True),
            f"{TAG_PREFIX}.reasons": "\n".join(self.reasons) or "-",
        }
        return {k: v[:TAG_VALUE_LIMIT] for k, v in tags.items()}


def effective_bounds(
    thresholds: Mapping[str, MetricThresholdConfig], has_baseline: bool
) -> tuple[dict[str, Bounds], list[str]]:
    """The bounds that apply now, and notes on what was skipped.

    Without a champion only absolute `threshold`s apply. `min_absolute_change = 0` means
    "no worse than the champion"; MetricThreshold needs a positive absolute change, so it
    becomes the equivalent `min_relative_change = 0` (candidate >= baseline).
    """
    out: dict[str, Bounds] = {}
    notes: list[str] = []
    for name, cfg in thresholds.items():
        absolute = cfg.min_absolute_change
        relative = cfg.min_relative_change
        if absolute == 0:
            absolute = None
            relative = 0.0 if relative is None else relative
        if not has_baseline:
            if absolute is not None or relative is not None:
                notes.append(f"{name}: no champion yet, comparison skipped")
            absolute = relative = None
        if cfg.threshold is None and absolute is None and relative is None:
            continue
        out[name] = Bounds(
            threshold=None if cfg.threshold is None else float(cfg.threshold),
            min_absolute_change=None if absolute is None else float(absolute),
            min_relative_change=None if relative is None else float(relative),
            greater_is_better=cfg.greater_is_better,
        )
    return out, notes


def _owner(line: str, names: list[str]) -> str | None:
    for name in sorted(names, key=len, reverse=True):
        if f"etric {name} " in line:  # "Metric acc value..." / "metric acc was missing..."
            return name
    return None


def decide(
    *,
    candidate_run_id: str,
    candidate: Mapping[str, float],
    alias: str,
    bounds: Mapping[str, Bounds],
    failures: list[str],
    baseline: Mapping[str, float] | None = None,
    champion_version: str | None = None,
    champion_run_id: str | None = None,
    notes: list[str] | None = None,
) -> GateDecision:
    """Pure: assemble the decision from the metrics and MLflow's failure lines."""
    base = dict(baseline or {})
    deltas = {k: candidate[k] - base[k] for k in sorted(candidate) if k in base}
    by_metric: dict[str, list[str]] = {}
    unowned = []
    for line in failures:
        owner = _owner(line, list(bounds))
        if owner is None:
            unowned.append(line)
        else:
            by_metric.setdefault(owner, []).append(line)
    checks = [
        MetricCheck(
            metric=name, candidate=candidate.get(name), baseline=base.get(name),
            delta=deltas.get(name), bounds=b.describe(), passed=name not in by_metric,
            reason=" ".join(by_metric.get(name, [])),
        )
        for name, b in bounds.items()
    ]
    return GateDecision(
        passed=not failures,
        candidate_run_id=candidate_run_id,
        alias=alias,
        champion_version=champion_version,
        champion_run_id=champion_run_id,
        compared_with_champion=baseline is not None,
        metrics=dict(candidate),
        baseline=base,
        deltas=deltas,
        checks=checks,
        reasons=list(failures),
        notes=list(notes or []),
    )


def _validate(
    check: Check,
    bounds: Mapping[str, Bounds],
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    candidate_run_id: str,
    baseline_run_id: str,
) -> list[str]:
    """MLflow's checks, split around a champion that lacks a metric.

    MLflow 3.x looks a metric up in a non-empty baseline before its own "missing from the
    baseline" check (KeyError), and skips that check for min_relative_change = 0.0. So such
    metrics get MLflow's wording from here and only their absolute threshold is validated.
    """
    if baseline is None:
        return check(bounds, candidate, None, candidate_run_id, "")
    present = {n: b for n, b in bounds.items() if n in baseline}
    absent = {n: b for n, b in bounds.items() if n not in baseline}
    failures = [
        f"Model comparison failed: metric {n} was missing from the evaluation result of the "
        "baseline model."
        for n, b in absent.items()
        if b.min_absolute_change is not None or b.min_relative_change is not None
    ]
    alone = {
        n: b.model_copy(update={"min_absolute_change": None, "min_relative_change": None})
        for n, b in absent.items() if b.threshold is not None
    }
    if alone:
        failures += check(alone, candidate, None, candidate_run_id, "")
    if present:
        failures += check(present, candidate, baseline, candidate_run_id, baseline_run_id)
    return failures


def evaluate(
    thresholds: Mapping[str, MetricThresholdConfig],
    *,
    candidate_run_id: str,
    candidate: Mapping[str, float],
    alias: str,
    champion_version: str | None = None,
    champion_run_id: str | None = None,
    champion_metrics: Mapping[str, float] | None = None,
    check: Check,
) -> GateDecision:
    """The gate: bounds from config, `check` (MLflow's validation), the decision as data.

    A candidate that IS the champion (a reused run) is only held to absolute thresholds:
    comparing a model with itself says nothing.
    """
    notes: list[str] = []
    baseline = champion_metrics
    if champion_version is None:
        notes.append(f"no model has alias {alias!r} yet: absolute thresholds only")
        baseline = None
    elif champion_run_id == candidate_run_id:
        notes.append(f"candidate is already {alias} (version {champion_version}):"
                     " absolute thresholds only")
        baseline = None
    bounds, skipped = effective_bounds(thresholds, baseline is not None)
    notes += skipped
    if not bounds:
        notes.append("no metric thresholds apply: the gate passes on a successful run")
    failures = _validate(check, bounds, candidate, baseline, candidate_run_id, champion_run_id or "")
    return decide(
        candidate_run_id=candidate_run_id, candidate=candidate, alias=alias, bounds=bounds,
        failures=failures, baseline=baseline, champion_version=champion_version,
        champion_run_id=champion_run_id, notes=notes,
    )
