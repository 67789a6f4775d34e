"""The gate: which bounds apply, MLflow's verdict turned into a decision, and its tags.

`evaluate` calls MLflow's real `validate_evaluation_results` (no I/O, no server); the
expected outcomes are written out by hand here, not recomputed.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ci.adapters.mlflow_gate import mlflow_failures
from ci.core.config import MetricThresholdConfig as T
from ci.core.errors import ConfigError
from ci.core.gate import Bounds, GateDecision, decide, effective_bounds, evaluate

NO_REGRESSION = {"accuracy": T(threshold=0.85, min_absolute_change=0.0)}


def run(thresholds: dict[str, T], candidate: dict[str, float],
        champion: dict[str, float] | None = None, same_run: bool = False) -> GateDecision:
    return evaluate(
        thresholds, candidate_run_id="cand", candidate=candidate, alias="champion",
        champion_version="3" if champion is not None else None,
        champion_run_id=("cand" if same_run else "champ") if champion is not None else None,
        champion_metrics=champion, check=mlflow_failures,
    )


# ---------------------------------------------------------------- effective_bounds (pure)


def test_without_champion_only_absolute_thresholds_apply() -> None:
    bounds, notes = effective_bounds(
        {"accuracy": T(threshold=0.8, min_absolute_change=0.02),
         "f1": T(min_relative_change=0.1)}, has_baseline=False,
    )
    assert bounds == {"accuracy": Bounds(threshold=0.8)}
    assert any("accuracy" in n for n in notes)
    assert any("f1" in n for n in notes)


def test_zero_absolute_change_means_no_regression() -> None:
    bounds, _ = effective_bounds(NO_REGRESSION, has_baseline=True)
    assert bounds["accuracy"] == Bounds(threshold=0.85, min_relative_change=0.0)
    assert bounds["accuracy"].describe() == ">= 0.85, no worse than champion"


def test_lower_is_better_is_kept() -> None:
    bounds, _ = effective_bounds({"loss": T(threshold=0.5, min_absolute_change=0.1,
                                            greater_is_better=False)}, has_baseline=True)
    assert bounds["loss"] == Bounds(threshold=0.5, min_absolute_change=0.1, greater_is_better=False)
    assert bounds["loss"].describe() == "<= 0.5, -0.1 vs champion"


# ---------------------------------------------------------------- decide (pure)


def test_decide_attributes_failures_and_computes_deltas() -> None:
    d = decide(
        candidate_run_id="c", candidate={"accuracy": 0.9, "f1": 0.7, "extra": 1.0},
        alias="champion", bounds={"accuracy": Bounds(threshold=0.8), "f1": Bounds(threshold=0.8)},
        failures=["Metric f1 value threshold check failed: candidate model f1 = 0.7, ..."],
        baseline={"accuracy": 0.85, "f1": 0.75}, champion_version="2", champion_run_id="b",
    )
    assert not d.passed
    assert d.compared_with_champion
    assert d.deltas == pytest.approx({"accuracy": 0.05, "f1": -0.05})
    checks = {c.metric: c for c in d.checks}
    assert checks["accuracy"].passed and checks["accuracy"].reason == ""
    assert not checks["f1"].passed and "threshold check failed" in checks["f1"].reason


def test_metric_names_sharing_a_prefix_are_not_confused() -> None:
    d = decide(candidate_run_id="c", candidate={"acc": 0.5, "acc_top2": 0.9}, alias="a",
               bounds={"acc": Bounds(threshold=0.6), "acc_top2": Bounds(threshold=0.6)},
               failures=["Metric acc value threshold check failed: candidate model acc = 0.5"])
    assert [c.metric for c in d.checks if not c.passed] == ["acc"]


def test_unattributed_failure_still_fails_the_gate() -> None:
    d = decide(candidate_run_id="c", candidate={}, alias="a", bounds={}, failures=["boom"])
    assert not d.passed and d.reasons == ["boom"]


# ---------------------------------------------------------------- evaluate (MLflow's checks)


def test_first_model_is_held_to_absolute_thresholds_only() -> None:
    d = run(NO_REGRESSION, {"accuracy": 0.96})
    assert d.passed
    assert not d.compared_with_champion
    assert d.champion_version is None
    assert d.baseline == {} and d.deltas == {}
    assert any("no model has alias 'champion'" in n for n in d.notes)


def test_first_model_below_threshold_fails_with_mlflow_reason() -> None:
    d = run(NO_REGRESSION, {"accuracy": 0.7})
    assert not d.passed
    assert len(d.reasons) == 1
    assert "accuracy value threshold check failed" in d.reasons[0]
    assert "0.85" in d.reasons[0]


def test_better_model_passes_against_champion() -> None:
    d = run(NO_REGRESSION, {"accuracy": 1.0}, champion={"accuracy": 0.963})
    assert d.passed
    assert d.compared_with_champion and d.champion_version == "3"
    assert d.deltas["accuracy"] == pytest.approx(0.037)
    assert d.reasons == []


def test_equal_model_passes_no_regression() -> None:
    assert run(NO_REGRESSION, {"accuracy": 0.9}, champion={"accuracy": 0.9}).passed


def test_worse_model_is_rejected_against_champion() -> None:
    d = run(NO_REGRESSION, {"accuracy": 0.9}, champion={"accuracy": 0.95})
    assert not d.passed
    assert d.deltas["accuracy"] == pytest.approx(-0.05)
    (check,) = d.checks
    assert not check.passed
    assert "minimum relative change check failed" in check.reason
    assert "baseline model accuracy = 0.95" in check.reason


@pytest.mark.parametrize(("candidate", "passed"), [(0.93, False), (0.96, True)])
def test_minimum_absolute_improvement(candidate: float, passed: bool) -> None:
    d = run({"accuracy": T(min_absolute_change=0.05)}, {"accuracy": candidate},
            champion={"accuracy": 0.9})
    assert d.passed is passed
    if not passed:
        assert "minimum absolute change check failed" in d.reasons[0]


def test_lower_is_better_metric() -> None:
    bounds = {"log_loss": T(threshold=0.5, min_absolute_change=0.01, greater_is_better=False)}
    assert run(bounds, {"log_loss": 0.2}, champion={"log_loss": 0.3}).passed
    assert not run(bounds, {"log_loss": 0.295}, champion={"log_loss": 0.3}).passed


def test_candidate_missing_a_metric_fails() -> None:
    d = run(NO_REGRESSION, {"f1": 0.9})
    assert not d.passed
    assert "missing from the evaluation result of the candidate" in d.reasons[0]


@pytest.mark.parametrize("change", [0.0, 0.01])
def test_champion_missing_a_compared_metric_fails(change: float) -> None:
    d = run({"accuracy": T(threshold=0.5, min_absolute_change=change)}, {"accuracy": 0.9},
            champion={"f1": 0.8})
    assert not d.passed
    assert any("missing from the evaluation result of the baseline" in r for r in d.reasons)


def test_candidate_that_is_the_champion_is_not_compared_with_itself() -> None:
    d = run({"accuracy": T(threshold=0.85, min_absolute_change=0.05)}, {"accuracy": 0.9},
            champion={"accuracy": 0.9}, same_run=True)
    assert d.passed
    assert not d.compared_with_champion
    assert any("already champion" in n for n in d.notes)


def test_no_thresholds_passes_with_a_note() -> None:
    d = run({}, {"accuracy": 0.1})
    assert d.passed and d.checks == []
    assert any("no metric thresholds" in n for n in d.notes)


def test_relative_change_above_one_is_refused_by_the_config() -> None:
    """MLflow refuses min_relative_change > 1; the config says so up front, naming the field."""
    from ci.core import config as cfg

    text = """
[project]
name = "svc"
image = "127.0.0.1:5000/svc"
[model]
train_command = "python train.py"
registered_model = "m"
[model.thresholds.accuracy]
min_relative_change = 1.5
"""
    with pytest.raises(ConfigError) as err:
        cfg.loads(text)
    assert err.value.problems[0].path == "model.thresholds.accuracy.min_relative_change"
    assert err.value.problems[0].value == 1.5


# ---------------------------------------------------------------- the decision as data


def test_decision_tags_are_strings_and_bounded() -> None:
    d = run(NO_REGRESSION, {"accuracy": 0.9}, champion={"accuracy": 0.95})
    tags = d.tags()
    assert tags["maci.gate"] == "failed"
    assert tags["maci.gate.champion_version"] == "3"
    assert json.loads(tags["maci.gate.deltas"]) == pytest.approx({"accuracy": -0.05})
    assert "relative change" in tags["maci.gate.reasons"]
    assert all(isinstance(v, str) and len(v) <= 5000 for v in tags.values())
    long = d.model_copy(update={"reasons": ["x" * 9000]})
    assert len(long.tags()["maci.gate.reasons"]) == 5000


def test_decision_round_trips_through_json() -> None:
    d = run(NO_REGRESSION, {"accuracy": 1.0, "f1_macro": 1.0}, champion={"accuracy": 0.9})
    assert GateDecision.model_validate_json(d.model_dump_json()) == d


@settings(max_examples=60, deadline=None)
@given(candidate=st.floats(0.0, 1.0), baseline=st.floats(0.01, 1.0))
def test_no_regression_passes_exactly_when_not_worse(candidate: float, baseline: float) -> None:
    d = run({"accuracy": T(min_absolute_change=0.0)}, {"accuracy": candidate},
            champion={"accuracy": baseline})
    assert d.passed is (candidate >= baseline)


def test_champion_without_metrics_fails_comparisons_but_checks_thresholds() -> None:
    d = run({"accuracy": T(threshold=0.95, min_absolute_change=0.0)}, {"accuracy": 0.9},
            champion={})
    assert not d.passed
    text = " ".join(d.reasons)
    assert "missing from the evaluation result of the baseline" in text
    assert "accuracy value threshold check failed" in text
