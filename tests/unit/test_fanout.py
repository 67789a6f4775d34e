"""ci.stages.fanout: concurrency bounded per runner, engine errors as results, qemu fallback.

The fake is at the one seam fan-out has: the Engine protocol.
"""

from __future__ import annotations

from typing import ClassVar

import anyio
import pytest

from ci.core.errors import EngineError, EngineUnreachable
from ci.core.placement import qemu_fallback
from ci.core.plan import Placement, RunnerInfo
from ci.core.results import JobSpec, PlatformResult
from ci.stages.fanout import run_jobs


def spec(platform: str, runner: str, kind: str = "native") -> JobSpec:
    return JobSpec(
        platform=platform, placement=Placement(kind=kind, runner=runner, engine="docker",  # type: ignore[arg-type]
                                               host=f"unix:///{runner}.sock"),
        project="app", image="r/app", context="/c", dockerfile="/c/Dockerfile",
        test_command=["true"], output_dir="/o", run_id="r",
    )


class FakeEngine:
    name = "docker"
    running: ClassVar[dict[str, int]] = {}
    peak: ClassVar[dict[str, int]] = {}

    def __init__(self, behaviour: dict[str, Exception] | None = None) -> None:
        self.behaviour = behaviour or {}

    async def run_job(self, s: JobSpec) -> PlatformResult:
        runner = s.placement.runner or "-"
        if runner in self.behaviour:
            raise self.behaviour[runner]
        self.running[runner] = self.running.get(runner, 0) + 1
        self.peak[runner] = max(self.peak.get(runner, 0), self.running[runner])
        await anyio.sleep(0.05)
        self.running[runner] -= 1
        return PlatformResult(
            project=s.project, image=s.image, platform=s.platform, runner=runner,
            engine="docker", placement=s.placement.kind, placement_reason=s.placement.reason,
            status="passed", digest="sha256:" + "0" * 64,
        )


def run(specs: list[JobSpec], engine: FakeEngine, capacity: dict[str, int],
        **kw: object) -> list[PlatformResult]:
    return anyio.run(lambda: run_jobs(specs, lambda s: engine, capacity, **kw))  # type: ignore[arg-type]


def test_capacity_bounds_each_runner_and_order_is_kept() -> None:
    FakeEngine.running, FakeEngine.peak = {}, {}
    specs = [spec(f"linux/{a}", r) for a, r in
             [("amd64", "a"), ("arm64", "a"), ("386", "a"), ("s390x", "b"), ("ppc64le", "b")]]
    results = run(specs, FakeEngine(), {"a": 2, "b": 1})
    assert [r.platform for r in results] == [s.platform for s in specs]
    assert FakeEngine.peak == {"a": 2, "b": 1}


def test_engine_error_becomes_an_error_result() -> None:
    results = run([spec("linux/amd64", "a"), spec("linux/arm64", "b")],
                  FakeEngine({"b": EngineError("buildx exploded")}), {"a": 1, "b": 1},
                  fail_fast=False)
    assert [r.status for r in results] == ["passed", "error"]
    assert results[1].failure is not None and results[1].failure.message == "buildx exploded"


RUNNERS = [
    RunnerInfo(name="arm", engine="docker", reachable=True, native="linux/arm64"),
    RunnerInfo(name="x86", engine="docker", reachable=True, native="linux/amd64",
               emulates=["linux/arm64"]),
]


def test_unreachable_runner_falls_back_to_qemu_and_says_so() -> None:
    engine = FakeEngine({"arm": EngineUnreachable("connection refused")})
    [res] = run([spec("linux/arm64", "arm")], engine, {"arm": 1, "x86": 1},
                replace=qemu_fallback(RUNNERS, "qemu"))
    assert (res.status, res.runner, res.placement) == ("passed", "x86", "emulated")
    assert "runner 'arm' unreachable at run time (connection refused)" in res.placement_reason
    assert "qemu on linux/amd64" in res.placement_reason


@pytest.mark.parametrize("fallback", ["fail", "qemu"])
def test_no_fallback_gives_an_error_result(fallback: str) -> None:
    engine = FakeEngine({"arm": EngineUnreachable("down"), "x86": EngineUnreachable("down too")})
    [res] = run([spec("linux/arm64", "arm")], engine, {},
                replace=qemu_fallback(RUNNERS, fallback))
    assert res.status == "error" and res.failure is not None
    assert "down" in res.failure.message
