"""ci.stages.history: `<state_dir>/history.json` appended after platform jobs, bounded per job
key, written atomically, and never a reason for a run to fail (missing, corrupt, unwritable)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ci.core.prediction import HISTORY_RUNS, JobRecord
from ci.core.results import FailureDetail, PlatformResult
from ci.stages import history

ARM, AMD = "linux/arm64", "linux/amd64"


def result(platform: str = ARM, *, run_id: str = "r1", kind: str = "emulated",
           runner: str = "local", **kw: object) -> PlatformResult:
    base: dict[str, object] = dict(
        project="svc", image="r/svc", platform=platform, runner=runner, engine="docker",
        placement=kind, status="passed", digest="sha256:" + "0" * 64, run_id=run_id,
        durations={"build_test": 20.0, "test": 15.0, "build_release": 5.0, "push": 2.0},
        emulated_seconds=40.0 if kind == "emulated" else 0.0)
    base.update(kw)
    return PlatformResult.model_validate(base)


def test_missing_file_is_no_history_without_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert history.load(tmp_path / "nowhere") == []
    assert caplog.records == []


def test_record_appends_totals_steps_and_outcome(tmp_path: Path) -> None:
    state = tmp_path / ".maci"  # not there yet: made on the first write
    history.record(state, [result(), result(AMD, kind="native", status="failed")])
    history.record(state, [result(run_id="r2")])
    data = json.loads((state / "history.json").read_text())
    assert data["schema_version"] == 1
    assert [(r["platform"], r["kind"], r["runner"], r["outcome"], r["run_id"])
            for r in data["runs"]] == [(ARM, "emulated", "local", "passed", "r1"),
                                       (AMD, "native", "local", "failed", "r1"),
                                       (ARM, "emulated", "local", "passed", "r2")]
    first = data["runs"][0]
    assert (first["seconds"], first["emulated_seconds"]) == (42.0, 40.0)
    assert first["steps"] == {"build_test": 20.0, "test": 15.0, "build_release": 5.0, "push": 2.0}
    assert history.load(state)[2] == JobRecord.model_validate(data["runs"][2])
    assert sorted(p.name for p in state.iterdir()) == ["history.json"]  # no temp file left


def test_history_keeps_the_last_runs_per_platform_kind_and_runner(tmp_path: Path) -> None:
    for i in range(HISTORY_RUNS + 5):
        history.record(tmp_path, [result(run_id=f"r{i}"), result(runner="other", run_id=f"o{i}")])
    history.record(tmp_path, [result(kind="native", run_id="n")])
    runs = history.load(tmp_path)
    local = [r.run_id for r in runs if r.key == (ARM, "emulated", "local")]
    assert local == [f"r{i}" for i in range(5, HISTORY_RUNS + 5)]
    assert len([r for r in runs if r.runner == "other"]) == HISTORY_RUNS
    assert [r.run_id for r in runs if r.kind == "native"] == ["n"]
    assert history.load(tmp_path)[-1].run_id == "n"


def test_cancelled_and_unrun_jobs_are_not_recorded(tmp_path: Path) -> None:
    cancelled = FailureDetail(step="cancelled", message="cancelled: linux/amd64 failed first")
    history.record(tmp_path, [result(status="failed", failure=cancelled),
                              result(status="error", durations={}),
                              result(kind="unavailable")])
    assert not (tmp_path / "history.json").exists()


@pytest.mark.parametrize("text", ["{not json", "[]", '{"schema_version": 1, "runs": [{}]}',
                                  '{"schema_version": 99, "runs": []}', "\udcff"])
def test_a_corrupt_file_is_ignored_with_one_warning_and_then_replaced(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str) -> None:
    path = tmp_path / "history.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert history.load(tmp_path) == []
    assert len(caplog.records) == 1 and caplog.records[0].levelname == "WARNING"
    assert f"job history {path} ignored" in caplog.records[0].getMessage()
    caplog.clear()
    history.record(tmp_path, [result()])  # one warning again, then a good file
    assert [r.getMessage().endswith("started anew") for r in caplog.records] == [True]
    assert [r.run_id for r in history.load(tmp_path)] == ["r1"]


def test_an_unwritable_state_dir_is_one_warning_never_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state dir should be")
    history.record(blocked, [result()])  # no exception: the run's result is what matters
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"job history {blocked / 'history.json'} not written"]
    assert blocked.read_text() == "a file where the state dir should be"


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    history.record(tmp_path, [result(run_id="old")])
    before = (tmp_path / "history.json").read_bytes()
    with pytest.raises(ValidationError):  # fails after the temp file was opened
        history.write(tmp_path, ["not a record"])  # type: ignore[list-item]
    assert (tmp_path / "history.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]
