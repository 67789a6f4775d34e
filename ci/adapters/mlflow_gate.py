"""MLflow's own model validation (adapter): `MetricThreshold` + `validate_evaluation_results`.

The gate's rules (which bounds apply, how failures read) are pure in `ci.core.gate`; this
module is the one place they meet MLflow, whose refusals become our errors here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ci.core.errors import ConfigError, ConfigProblem
from ci.core.gate import Bounds


def metric_thresholds(bounds: Mapping[str, Bounds]) -> dict[str, Any]:
    """`mlflow.models.MetricThreshold` per metric; MLflow's own refusals become ConfigErrors."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import MetricThreshold

    out: dict[str, Any] = {}
    problems = []
    for name, b in bounds.items():
        try:
            out[name] = MetricThreshold(  # type: ignore[no-untyped-call]
                threshold=b.threshold, min_absolute_change=b.min_absolute_change,
                min_relative_change=b.min_relative_change, greater_is_better=b.greater_is_better,
            )
        except MlflowException as exc:
            problems.append(ConfigProblem(f"model.thresholds.{name}", b.model_dump(), exc.message))
    if problems:
        raise ConfigError(problems)
    return out


def mlflow_failures(
    bounds: Mapping[str, Bounds],
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    candidate_run_id: str = "",
    baseline_run_id: str = "",
) -> list[str]:
    """Run `mlflow.validate_evaluation_results`; its failure lines, or [] when it passed."""
    import mlflow
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    thresholds = metric_thresholds(bounds)
    # Results built from logged metrics: what mlflow.evaluate() would return, minus artifacts.
    result: Any = EvaluationResult
    cand = result(metrics=dict(candidate), artifacts={}, run_id=candidate_run_id)
    base = (
        None if baseline is None
        else result(metrics=dict(baseline), artifacts={}, run_id=baseline_run_id)
    )
    try:
        mlflow.validate_evaluation_results(thresholds, cand, base)
    except ModelValidationFailedException as exc:
        return [line.strip() for line in exc.message.splitlines() if line.strip()]
    return []
