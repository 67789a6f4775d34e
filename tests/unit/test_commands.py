"""The run, job and train commands with fakes at the ports: what each writes and returns,
and that a project's own pipeline file is what `ci run NAME` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci.commands.job import run_job
from ci.commands.run import choose_engine, run_pipeline
from ci.commands.train import run_train
from ci.core import config as cfg
from ci.core.config import Config
from ci.core.errors import PipelineError, UsageError
from ci.core.results import PlatformResult
from tests.fakes import Fakes
from tests.unit.test_release_order import ENV, TOML

NIGHTLY = '''
from ci import Release


def pipeline(run: Release) -> int:
    run.plan()
    run.platform_jobs()
    run.add_gate("own", passed=True)
    run.decide(require_model=False, require_smoke=False)
    run.publish(tags=["nightly"])
    return 0
'''


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return cfg.loads(TOML, root=str(tmp_path))


def test_run_loads_the_projects_own_pipeline_file(config: Config, tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "nightly.py").write_text(NIGHTLY)
    fakes = Fakes()
    code, run, error = run_pipeline(config, "nightly", environ=ENV, ports=fakes.ports(),
                                    live=False)
    assert (code, error) == (0, None)
    assert run.pipeline == "nightly" and run.verdict is not None and run.verdict.passed
    assert [g.name for g in run.verdict.gates] == ["own"]
    assert list(fakes.registry.tags("examples/wine")) == ["nightly"]
    assert fakes.tracking.calls == []  # image-only: the model stage never ran
    written = json.loads((config.state_path / "verdict.json").read_text())
    assert written["passed"] is True and written["gates"][0]["name"] == "own"


def test_run_reports_a_rejection_as_exit_1_with_the_error(config: Config) -> None:
    fakes = Fakes()
    fakes.tracking.gate_passes = False
    code, run, error = run_pipeline(config, "release", environ=ENV, ports=fakes.ports(),
                                    live=False, force=True)
    assert code == 1 and error is not None and "model gate" in error.message
    assert not fakes.moved and run.outcome()["passed"] is False


def test_run_of_a_missing_pipeline_is_a_usage_error(config: Config) -> None:
    with pytest.raises(PipelineError, match=r"pipelines/nosuch\.py") as info:
        run_pipeline(config, "nosuch", environ=ENV, ports=Fakes().ports(), live=False)
    assert info.value.exit_code == 2


def test_choose_engine_follows_a_dagger_session() -> None:
    assert choose_engine(None, {}) == "docker"
    assert choose_engine(None, {"DAGGER_SESSION_PORT": "1", "DAGGER_SESSION_TOKEN": "t"}) == \
        "dagger"
    assert choose_engine("docker", {"DAGGER_SESSION_PORT": "1", "DAGGER_SESSION_TOKEN": "t"}) \
        == "docker"


def test_job_writes_one_platform_result_with_the_model_embedded(config: Config,
                                                                 tmp_path: Path) -> None:
    fakes = Fakes()
    out = tmp_path / "legs" / "amd64.json"
    result, path = run_job(config, "amd64", output=out, environ=ENV, model_version="7",
                           ports=fakes.ports())
    assert path == out and result.ok and result.platform == "linux/amd64"
    assert PlatformResult.model_validate_json(out.read_text()) == result
    assert fakes.tracking.calls == ["materialize"]
    assert fakes.registry.writes == []  # a leg pushes by digest only: no tag, no index
    spec = fakes.engines.released["linux/amd64"]  # the same handoff as `ci run`
    assert spec.build_args["MODEL_SHA256"] == spec.labels["dev.maci.model.sha256"] == "0" * 64


def test_job_refuses_bad_input_before_any_work(config: Config) -> None:
    fakes = Fakes()
    with pytest.raises(UsageError, match="not one of the project's platforms"):
        run_job(config, "linux/s390x", environ=ENV, model_version="7", ports=fakes.ports())
    with pytest.raises(UsageError, match="--model-version is required"):
        run_job(config, "linux/amd64", environ=ENV, ports=fakes.ports())
    assert fakes.recorder == []


def test_train_gates_through_the_tracking_port(config: Config) -> None:
    fakes = Fakes()
    result = run_train(config, ENV, tracking=fakes.tracking)
    assert result.passed and fakes.tracking.calls == ["train_and_gate"]
    assert fakes.tracking.promoted == []  # `ci train` never moves the alias
    run_train(config, ENV, tracking=fakes.tracking, retrain=True)
    assert fakes.tracking.retrain == ["", "--retrain"]
