"""ci.core.prediction: job times predicted from the history, `ci plan` showing them, and the
emulation budget refused at plan time (before any work) on the prediction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci.cli import main
from ci.core import config as cfg
from ci.core.errors import PlanUnavailable
from ci.core.plan import RunnerInfo, make_plan
from ci.core.prediction import (
    DEFAULT_EMULATION_FACTOR,
    TIMES,
    JobRecord,
    appended,
    budget_problem,
    emulation_factor,
    predict,
    prediction_lines,
    record_of,
    with_predictions,
)
from ci.core.results import FailureDetail, PlatformResult
from ci.pipelines import release
from ci.pipelines.handle import Release
from ci.stages import history
from ci.stages.prepare import prepare
from tests.fakes import Fakes

AMD, ARM, ARMV7 = "linux/amd64", "linux/arm64", "linux/arm/v7"
X = TIMES  # the basis's multiplication sign


def rec(platform: str, kind: str, runner: str = "local", *, work: float = 10.0,
        push: float = 1.0, outcome: str = "passed", run_id: str = "") -> JobRecord:
    """A history entry: `work` seconds of emulatable steps (split build/test) plus a push."""
    steps = {"build_test": work / 2, "test": work / 4, "build_release": work / 4, "push": push}
    return JobRecord(platform=platform, kind=kind, runner=runner,  # type: ignore[arg-type]
                     seconds=work + push, emulated_seconds=work if kind == "emulated" else 0.0,
                     steps=steps, outcome=outcome, run_id=run_id)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the predictor


def test_median_of_the_jobs_own_runs() -> None:
    runs = [rec(ARM, "emulated", work=w) for w in (39.0, 40.0, 49.0)]
    runs += [rec(ARM, "emulated", "other", work=500.0), rec(ARM, "emulated", work=1.0,
                                                            outcome="failed")]
    p = predict(ARM, "emulated", "local", runs)
    assert (p.seconds, p.emulated_seconds, p.basis) == (41.0, 40.0, "median of 3 runs")


def test_same_platform_on_other_runners_when_this_runner_has_none() -> None:
    runs = [rec(ARM, "native", "arm1", work=8.0), rec(ARM, "native", "arm2", work=12.0)]
    p = predict(ARM, "native", "arm3", runs)
    assert (p.seconds, p.emulated_seconds, p.basis) == (11.0, 0.0,
                                                        "median of 2 runs on other runners")


def test_emulated_derived_from_native_with_the_measured_factor() -> None:
    # amd64 was seen both ways: 58 s of emulated steps vs 10 s natively -> factor 5.8
    runs = [rec(AMD, "native", work=10.0), rec(AMD, "emulated", "arm", work=58.0),
            rec(ARM, "native", "arm", work=20.0, push=2.0)]
    assert emulation_factor(runs) == (pytest.approx(5.8), True)
    p = predict(ARM, "emulated", "local", runs)  # the arm runner is down today
    assert p.emulated_seconds == pytest.approx(116.0)
    assert p.seconds == pytest.approx(118.0)  # the push is not slowed by qemu
    assert p.basis == f"native {X} 5.8 (measured)"


def test_emulated_derived_from_another_platform_with_the_default_factor() -> None:
    runs = [rec(AMD, "native", work=10.0, push=1.0)]
    assert emulation_factor(runs) == (DEFAULT_EMULATION_FACTOR, False)
    p = predict(ARM, "emulated", "local", runs)
    assert (p.seconds, p.emulated_seconds) == (61.0, 60.0)
    assert p.basis == f"linux/amd64 native {X} 6 (default)"
    runs.append(rec(ARMV7, "native", "pi", work=30.0))
    assert predict(ARM, "emulated", "local", runs).basis == f"other platforms' native {X} 6 (default)"


def test_factor_is_the_median_over_platforms() -> None:
    runs = [rec(AMD, "native", work=10.0), rec(AMD, "emulated", work=40.0),
            rec(ARM, "native", work=10.0), rec(ARM, "emulated", work=80.0),
            rec(ARMV7, "native", work=10.0), rec(ARMV7, "emulated", work=100.0)]
    assert emulation_factor(runs) == (8.0, True)


def test_no_history_predicts_nothing() -> None:
    for kind in ("native", "emulated"):
        p = predict(ARM, kind, "local", [rec(ARM, kind, outcome="failed")])
        assert (p.seconds, p.emulated_seconds, p.basis) == (None, None, "no history")
    # a native job is never guessed from emulated runs
    assert predict(AMD, "native", "local", [rec(AMD, "emulated")]).basis == "no history"
    assert predict(ARM, "unavailable", None, [rec(ARM, "native")]).basis == "not placed"


# ------------------------------------------------------------------------- history records


def result(platform: str, kind: str = "emulated", **kw: object) -> PlatformResult:
    base: dict[str, object] = dict(
        project="svc", image="r/svc", platform=platform, runner="local", engine="docker",
        placement=kind, status="passed", digest="sha256:" + "0" * 64, run_id="run-1",
        durations={"build_test": 20.0, "test": 15.0, "build_release": 5.0, "push": 2.0},
        emulated_seconds=40.0 if kind == "emulated" else 0.0)
    base.update(kw)
    return PlatformResult.model_validate(base)


def test_a_result_becomes_a_record_unless_its_time_says_nothing() -> None:
    r = record_of(result(ARM))
    assert r is not None and r.key == (ARM, "emulated", "local")
    assert (r.seconds, r.emulated_seconds, r.work, r.outcome, r.run_id) == (
        42.0, 40.0, 40.0, "passed", "run-1")
    cancelled = FailureDetail(step="cancelled", message="cancelled: linux/amd64 failed first")
    assert record_of(result(ARM, status="failed", failure=cancelled)) is None
    assert record_of(result(ARM, "unavailable")) is None
    assert record_of(result(ARM, status="error", durations={})) is None
    failed = record_of(result(ARM, status="failed"))
    assert failed is not None and failed.outcome == "failed"


def test_appended_keeps_the_last_runs_of_each_key_in_order() -> None:
    old = [rec(ARM, "emulated", run_id=f"a{i}") for i in range(18)] + [rec(AMD, "native")]
    new = [rec(ARM, "emulated", run_id=f"b{i}") for i in range(5)]
    kept = appended(old, new, limit=20)
    arm = [r.run_id for r in kept if r.platform == ARM]
    assert arm == [f"a{i}" for i in range(3, 18)] + [f"b{i}" for i in range(5)]
    assert len(kept) == 21 and kept[15].platform == AMD  # the other key keeps its place


# -------------------------------------------------------------------------- plan + budget

BUDGET_TOML = f"""
[project]
name = "svc"
image = "127.0.0.1:5000/svc"
platforms = ["{AMD}", "{ARM}", "{ARMV7}"]

[emulation]
budget_seconds = 1800
"""
LOCAL = RunnerInfo(name="local", engine="docker", reachable=True, native=AMD,
                   emulates=[ARM, ARMV7], capacity=2)


def test_budget_refused_on_the_prediction_with_every_number() -> None:
    plan = make_plan(cfg.loads(BUDGET_TOML), [LOCAL])
    runs = ([rec(ARM, "emulated", work=w) for w in (1700.0, 1800.0, 1800.0, 1900.0)]
            + [rec(AMD, "native", work=100.0)])
    predicted = with_predictions(plan, runs)
    assert [j.prediction_basis for j in predicted.jobs] == [
        "median of 1 run", "median of 4 runs", f"linux/amd64 native {X} 6 (default)"]
    assert budget_problem(predicted) == (
        "emulation budget: predicted 2400 s emulated (linux/arm64 ~1800 s median of 4 runs, "
        f"linux/arm/v7 ~600 s linux/amd64 native {X} 6 (default)) > 1800 s; add a native runner "
        "or raise [emulation] budget_seconds")
    assert prediction_lines(predicted) == [
        "linux/amd64  native on local  ~101 s (median of 1 run)",
        "linux/arm64  emulated on local  ~1801 s (median of 4 runs)",
        f"linux/arm/v7  emulated on local  ~601 s (linux/amd64 native {X} 6 (default))",
        "emulated total ~2400 s (budget 1800 s)",
    ]


def test_no_history_or_no_budget_refuses_nothing() -> None:
    plan = make_plan(cfg.loads(BUDGET_TOML), [LOCAL])
    assert budget_problem(with_predictions(plan, [])) is None
    assert prediction_lines(with_predictions(plan, []))[-1] == (
        "emulated total ~0 s + linux/arm64, linux/arm/v7 (no estimate) (budget 1800 s)")
    no_budget = make_plan(cfg.loads(BUDGET_TOML.replace("budget_seconds = 1800", "")), [LOCAL])
    big = [rec(ARM, "emulated", work=99999.0)]
    assert budget_problem(with_predictions(no_budget, big)) is None
    # only the known part counts: within the budget, the unpredicted arm/v7 does not refuse
    assert budget_problem(with_predictions(plan, [rec(ARM, "emulated", work=900.0)])) is None


# ------------------------------------------------------------------- `ci plan`, in-process

CLI_TOML = """
[project]
name = "svc"
image = "127.0.0.1:5000/svc"
platforms = ["linux/amd64", "linux/arm64"]

[emulation]
budget_seconds = BUDGET

[[runners]]
name = "eng"
engine = "dagger"
platform = "linux/amd64"
"""


def cli_project(root: Path, monkeypatch: pytest.MonkeyPatch, budget: int) -> Path:
    """A project whose one Dagger runner (`eng`, amd64) emulates arm64; no engine is called."""
    (root / "ci.toml").write_text(CLI_TOML.replace("BUDGET", str(budget)))
    monkeypatch.chdir(root)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("DAGGER_SESSION_PORT", "1")
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "t")
    monkeypatch.delenv("_EXPERIMENTAL_DAGGER_CLI_BIN", raising=False)
    history.write(root / ".maci", [rec(ARM, "emulated", "eng", work=w, push=1.0)
                                   for w in (30.0, 40.0, 45.0)])
    return root


def test_plan_console_shows_each_prediction_and_the_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cli_project(tmp_path, monkeypatch, budget=600)
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "linux/arm64  emulated on eng  ~41 s (median of 3 runs)" in out
    assert "linux/amd64  native on eng  no estimate (no history)" in out
    assert "emulated total ~40 s (budget 600 s)" in out
    assert "over budget" not in out


def test_plan_json_has_predicted_seconds_and_basis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cli_project(tmp_path, monkeypatch, budget=600)
    assert main(["plan", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    jobs = {j["platform"]: j for j in data["jobs"]}
    assert (jobs[ARM]["predicted_seconds"], jobs[ARM]["prediction_basis"]) == (
        41.0, "median of 3 runs")
    assert jobs[ARM]["predicted_emulated_seconds"] == 40.0
    assert (jobs[AMD]["predicted_seconds"], jobs[AMD]["prediction_basis"]) == (None, "no history")
    assert data["emulation"] == {"predicted_seconds": 40.0, "unpredicted": [],
                                 "budget_seconds": 600.0, "refusal": None}
    assert data["ok"] is True


def test_plan_over_the_predicted_budget_exits_1_and_says_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cli_project(tmp_path, monkeypatch, budget=30)
    line = ("emulation budget: predicted 40 s emulated (linux/arm64 ~40 s median of 3 runs) > "
            "30 s; add a native runner or raise [emulation] budget_seconds")
    assert main(["plan"]) == 1
    assert f"over budget: {line}" in capsys.readouterr().out
    assert main(["plan", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["emulation"]["refusal"] == line


def test_plan_with_a_corrupt_history_warns_once_and_predicts_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    cli_project(tmp_path, monkeypatch, budget=30)
    (tmp_path / ".maci" / "history.json").write_text("{not json")
    assert main(["plan", "--json"]) == 0  # no history: nothing refused, never exit 3
    assert json.loads(capsys.readouterr().out)["emulation"]["refusal"] is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage().startswith(
        f"job history {tmp_path / '.maci' / 'history.json'} ignored (not a history file: "
        "Invalid JSON")


# ---------------------------------------------------------- the run refuses before any work

RUN_TOML = """
[project]
name = "wine"
image = "127.0.0.1:5999/examples/wine"
platforms = ["linux/amd64", "linux/arm64"]

[emulation]
budget_seconds = 60
"""
ENV = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
       "GITHUB_REF": "refs/heads/main", "GITHUB_REPOSITORY": "acme/wine", "GITHUB_RUN_ID": "42"}


def state_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "ci.toml"}


def test_a_run_predicted_over_budget_is_refused_at_plan_time_and_writes_nothing(
        tmp_path: Path) -> None:
    config = cfg.loads(RUN_TOML, root=str(tmp_path))
    history.write(config.state_path, [rec(ARM, "emulated", work=w) for w in (100, 120, 130, 140)])
    before = state_files(tmp_path)
    fakes = Fakes()
    fakes.plan.emulated.add(ARM)
    run = Release(config=config, environ=ENV, ports=fakes.ports(), force=True)
    with pytest.raises(PlanUnavailable) as caught:
        release.pipeline(run)
    assert caught.value.lines() == [
        "emulation budget: predicted 125 s emulated (linux/arm64 ~125 s median of 4 runs) > "
        "60 s; add a native runner or raise [emulation] budget_seconds"]
    assert caught.value.exit_code == 1
    assert fakes.recorder == ["plan"]  # no training, no job, no registry call
    assert not fakes.moved and run.verdict is None
    assert state_files(tmp_path) == before  # no run folder, no verdict, history untouched


def test_prepare_refuses_on_the_prediction_and_passes_without_history(tmp_path: Path) -> None:
    config = cfg.loads(RUN_TOML, root=str(tmp_path))
    plan = make_plan(config, [LOCAL])
    assert [s.platform for s in prepare(config, environ=ENV, plan=plan).specs] == [AMD, ARM]
    history.write(config.state_path, [rec(ARM, "emulated", work=61.0)])
    with pytest.raises(PlanUnavailable, match="predicted 61 s emulated"):
        prepare(config, environ=ENV, plan=plan)
    assert not (config.state_path / "runs").exists()


def test_within_the_predicted_budget_the_verdict_still_checks_the_real_time(
        tmp_path: Path) -> None:
    """The prediction only refuses early; the verdict's after-the-fact check still decides,
    and the run's own job times are appended to the history."""
    config = cfg.loads(RUN_TOML, root=str(tmp_path))
    history.write(config.state_path, [rec(ARM, "emulated", work=30.0)])
    fakes = Fakes()
    fakes.plan.emulated.add(ARM)
    fakes.engines.emulated_seconds[ARM] = 120.0
    run = Release(config=config, environ=ENV, ports=fakes.ports(), force=True)
    run.plan()
    assert run.prepared is not None
    assert run.prepared.plan.job(ARM).prediction_basis == "median of 1 run"
    run.platform_jobs()
    verdict = run.decide(require_model=False)
    assert "emulation budget: 120 s emulated > 60 s" in verdict.reasons
    recorded = history.load(config.state_path)
    assert [(r.platform, r.kind, r.emulated_seconds) for r in recorded] == [
        (ARM, "emulated", 30.0), (AMD, "native", 0.0), (ARM, "emulated", 120.0)]
    # the next plan predicts from both runs and refuses before any work
    again = Fakes()
    again.plan.emulated.add(ARM)
    with pytest.raises(PlanUnavailable, match=r"predicted 75 s emulated .*median of 2 runs"):
        Release(config=config, environ=ENV, ports=again.ports(), force=True).plan()
