"""Smoke tests run in parallel across platforms, each as soon as its image is pushed, bounded
per runner; the verdict still waits for every one of them (fakes at the ports, no docker)."""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from ci.core import config as cfg
from ci.core.config import Config
from ci.core.critical_path import WAIT_FOR_MODEL, critical_path
from ci.core.errors import EngineError, GateFailed
from ci.core.model import MaterializedModel, ModelStageResult, PromoteResult
from ci.core.plan import Plan
from ci.core.platforms import Platform
from ci.core.ports import Engine, EngineFactory
from ci.core.results import JobSpec, PlatformResult, SourceInfo
from ci.pipelines import image_only, release
from ci.pipelines.handle import Release
from ci.reports.summary import Progress
from ci.stages.fanout import BeforeRelease
from tests.fakes import Fakes, FakeTracking
from tests.unit.test_release_order import ENV, TOML

AMD, ARM = "linux/amd64", "linux/arm64"
WAIT = 5.0  # seconds a barrier waits before the test fails (never reached when it passes)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return cfg.loads(TOML, root=str(tmp_path))


def handle(config: Config, fakes: Fakes, **ports: object) -> Release:
    return Release(config=config, environ=ENV, force=True,
                   ports=dataclasses.replace(fakes.ports(), **ports))  # type: ignore[arg-type]


def meet(barrier: threading.Barrier) -> Callable[[str], None]:
    """An `on_call` that waits at `barrier` (BrokenBarrierError fails the smoke call)."""
    def on_call(platform: str) -> None:
        barrier.wait()
    return on_call


def test_two_platforms_are_smoke_tested_at_the_same_time(config: Config) -> None:
    """Both smoke calls are in flight at once: each waits at a barrier only the other opens."""
    both = threading.Barrier(2, timeout=WAIT)
    fakes = Fakes()
    fakes.smoke.on_call = meet(both)
    run = handle(config, fakes)
    assert release.pipeline(run) == 0
    assert fakes.smoke.in_flight_max == 2 and sorted(fakes.smoke.calls) == [AMD, ARM]
    assert run.verdict is not None and [s.platform for s in run.verdict.smoke] == [AMD, ARM]


def test_image_only_smoke_tests_in_parallel_too(config: Config) -> None:
    """`platform_jobs()` then `smoke()` (no model stage): the same overlap."""
    both = threading.Barrier(2, timeout=WAIT)
    fakes = Fakes()
    fakes.smoke.on_call = meet(both)
    assert image_only.pipeline(handle(config, fakes)) == 0
    assert fakes.smoke.in_flight_max == 2


class OneAtATime:
    """PlanPort: the fake plan with its one runner at capacity 1."""

    def __init__(self, fakes: Fakes) -> None:
        self.inner = fakes.plan

    def __call__(self, config: Config, *, only: list[Platform] | None, engine: str | None,
                 environ: Mapping[str, str]) -> Plan:
        plan = self.inner(config, only=only, engine=engine, environ=environ)
        return plan.model_copy(update={"runners": [
            r.model_copy(update={"capacity": 1}) for r in plan.runners]})


def test_capacity_one_on_a_shared_runner_serialises_the_smoke_tests(config: Config) -> None:
    """Each smoke waits at a barrier for company that never comes, then goes on alone."""
    both = threading.Barrier(2, timeout=0.5)
    alone: list[str] = []

    def on_call(platform: str) -> None:
        try:
            both.wait()
        except threading.BrokenBarrierError:
            alone.append(platform)

    fakes = Fakes()
    fakes.smoke.on_call = on_call
    run = handle(config, fakes, plan=OneAtATime(fakes))
    assert release.pipeline(run) == 0
    assert sorted(alone) == [AMD, ARM] and fakes.smoke.in_flight_max == 1
    assert run.verdict is not None and [s.platform for s in run.verdict.smoke] == [AMD, ARM]


class Held:
    """One platform's engine that starts only once `until` is set (another smoke began)."""

    name = "fake"

    def __init__(self, engine: Engine, until: threading.Event) -> None:
        self.engine, self.until = engine, until

    async def run_job(self, spec: JobSpec) -> PlatformResult:
        if not await anyio.to_thread.run_sync(self.until.wait, WAIT):
            raise AssertionError(f"{spec.platform}: the other platform's smoke never started")
        return await self.engine.run_job(spec)


def test_a_platform_is_smoke_tested_while_another_platform_still_builds(config: Config) -> None:
    """amd's smoke starts when amd's image is pushed, not after every platform job: arm's job
    cannot even begin until it did."""
    fakes = Fakes()
    amd_smoke = threading.Event()
    fakes.smoke.on_call = lambda platform: amd_smoke.set() if platform == AMD else None

    def engines(before_release: BeforeRelease | None) -> EngineFactory:
        make = fakes.engines(before_release)
        return lambda spec: Held(make(spec), amd_smoke) if spec.platform == ARM else make(spec)

    assert release.pipeline(handle(config, fakes, engines=engines)) == 0
    rec = fakes.recorder
    assert rec.index(f"release {AMD}") < rec.index(f"smoke {AMD}") < rec.index(f"job {ARM}")
    assert rec.index(f"release {ARM}") < rec.index(f"smoke {ARM}") < rec.index("preflight")


def test_a_failed_smoke_still_blocks_the_publish_after_every_smoke_ran(config: Config) -> None:
    """arm's smoke fails while amd's is still running: the verdict waits for both, rejects,
    and lists them in platform order."""
    arm_done = threading.Event()

    def on_call(platform: str) -> None:
        if platform == AMD:
            assert arm_done.wait(WAIT)  # amd finishes last
        else:
            arm_done.set()

    fakes = Fakes()
    fakes.smoke.failing.add(ARM)
    fakes.smoke.on_call = on_call
    run = handle(config, fakes)
    with pytest.raises(GateFailed, match=f"{ARM}: smoke: every /predict answered 500"):
        release.pipeline(run)
    assert run.verdict is not None
    assert [(s.platform, s.passed) for s in run.verdict.smoke] == [(AMD, True), (ARM, False)]
    assert fakes.registry.writes == [] and "preflight" not in fakes.recorder


def test_a_smoke_port_error_is_raised_by_smoke_like_before(config: Config) -> None:
    """A broken smoke port (not a failed smoke test) still stops the pipeline at smoke()."""
    def on_call(platform: str) -> None:
        if platform == ARM:
            raise EngineError("docker daemon gone")

    fakes = Fakes()
    fakes.smoke.on_call = on_call
    run = handle(config, fakes)
    run.plan()
    run.model_and_platform_jobs()  # the error is kept, not raised out of the task group
    with pytest.raises(EngineError, match="docker daemon gone"):
        run.smoke()
    assert fakes.registry.writes == []


def test_smoke_runs_what_the_jobs_did_not_start_in_parallel(config: Config) -> None:
    """Results from elsewhere (a pipeline's own jobs): smoke() runs every missing one, at once."""
    first = Fakes()
    done = handle(config, first)
    done.plan()
    done.platform_jobs()
    both = threading.Barrier(2, timeout=WAIT)
    fakes = Fakes()
    fakes.smoke.on_call = meet(both)
    run = handle(config, fakes)
    run.prepared, run.results = done.prepared, done.results
    assert [s.platform for s in run.smoke()] == [AMD, ARM]
    assert fakes.smoke.in_flight_max == 2
    assert [s.platform for s in run.smoke()] == [AMD, ARM]  # collected once, not run twice
    assert sorted(fakes.smoke.calls) == [AMD, ARM]


class SlowTraining(FakeTracking):
    """Training that ends only once both release builds wait for it (a long pole)."""

    def __init__(self, fakes: Fakes, waiting: threading.Barrier) -> None:
        super().__init__(fakes.recorder)
        self.waiting = waiting

    def train_and_gate(self, config: Config, source: SourceInfo, run_id: str, *,
                       environ: Mapping[str, str], retrain: str = "") -> ModelStageResult:
        self.waiting.wait()
        return super().train_and_gate(config, source, run_id, environ=environ,
                                      retrain=retrain)

    def materialize(self, config: Config, version: str, *,
                    environ: Mapping[str, str]) -> MaterializedModel:
        return super().materialize(config, version, environ=environ)

    def promote(self, config: Config, version: str, deploy_commit: str, *,
                environ: Mapping[str, str]) -> PromoteResult:
        return super().promote(config, version, deploy_commit, environ=environ)


class WaitWatch(Progress):
    """The console Progress, telling a barrier when a platform starts waiting for the model."""

    def __init__(self, waiting: threading.Barrier) -> None:
        super().__init__(Console(file=io.StringIO()), live=False)
        self.waiting = waiting

    def stage_started(self, lane: str, stage: str, detail: str = "",
                      placement: str = "") -> None:
        super().stage_started(lane, stage, detail, placement)
        if stage == WAIT_FOR_MODEL:
            threading.Thread(target=self.waiting.wait, daemon=True).start()


def test_a_release_build_waiting_for_the_model_is_a_span_the_critical_path_skips(
        config: Config) -> None:
    """Each platform lane says how long it waited; the path runs through the model stage."""
    waiting = threading.Barrier(3, timeout=WAIT)  # two platforms + the training
    fakes = Fakes()
    progress = WaitWatch(waiting)
    run = handle(config, fakes, tracking=SlowTraining(fakes, waiting))
    run.progress = progress
    assert release.pipeline(run) == 0
    spans = progress.spans
    for p in (AMD, ARM):
        (wait,) = [s for s in spans if s.lane == p and s.stage == WAIT_FOR_MODEL]
        (job,) = [s for s in spans if s.lane == p and s.stage == "test+build+push"]
        (smoke,) = [s for s in spans if s.lane == p and s.stage == "smoke"]
        assert job.start <= wait.start <= wait.end <= job.end <= smoke.start
    (train,) = [s for s in spans if s.stage == "train+gate"]
    assert all(s.start <= train.end for s in spans if s.stage == WAIT_FOR_MODEL)
    path = critical_path(spans)
    assert path is not None
    assert (path.stages[0].lane, path.stages[0].stage) == ("release", "plan")
    assert (path.stages[-1].lane, path.stages[-1].stage) == ("model", "promote")
    assert ("model", "train+gate") in {(s.lane, s.stage) for s in path.stages}
    assert WAIT_FOR_MODEL not in {s.stage for s in path.stages}
    assert [s.start for s in path.stages] == sorted(s.start for s in path.stages)


def test_a_rebuilt_image_is_smoke_tested_again_not_taken_from_before(config: Config) -> None:
    """A pipeline that reruns a job gets a smoke test of the new digest, not the old result."""
    fakes = Fakes()
    run = handle(config, fakes)
    run.plan()
    run.platform_jobs()  # both smoke tests ran here
    rebuilt = "sha256:" + "e" * 64
    run.results = [r.model_copy(update={"digest": rebuilt}) if r.platform == ARM else r
                   for r in run.results]
    results = run.smoke()
    assert fakes.smoke.calls.count(ARM) == 2 and fakes.smoke.calls.count(AMD) == 1
    assert [s.reference.rsplit("@", 1)[1] for s in results][1] == rebuilt
