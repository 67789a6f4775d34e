"""ci.core.verdict.decide: every gate failure gives its own reason; only all-passed passes."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ci.core.results import FailureDetail, PlatformResult, SourceInfo, TestSummary
from ci.core.verdict import ModelVerdict, SmokeResult, Verdict, decide

AMD, ARM = "linux/amd64", "linux/arm64"
IMAGE = "127.0.0.1:5000/wine"


def platform(p: str, *, ok: bool = True, placement: str = "native", digest: str | None = "sha256:aa",
             failure: str | None = None, emulated: float = 0.0) -> PlatformResult:
    return PlatformResult(
        project="wine", image=IMAGE, platform=p, runner="local", engine="docker",
        placement=placement, status="passed" if ok else "failed",  # type: ignore[arg-type]
        digest=digest if ok else None,
        tests=TestSummary(total=3, passed=3 if ok else 2, failed=0 if ok else 1),
        durations={"test": 2.0, "build": 3.0}, emulated_seconds=emulated,
        failure=FailureDetail(step="test", message=failure) if failure else None,
    )


def model(ok: bool = True, reason: str = "") -> ModelVerdict:
    return ModelVerdict(registered_model="wine", alias="champion", run_id="r1", candidate_version="2",
                        champion_version="1", passed=ok, reason=reason, metrics={"accuracy": 0.9},
                        baseline={"accuracy": 0.95}, deltas={"accuracy": -0.05})


def smoke(p: str, ok: bool = True, reason: str = "") -> SmokeResult:
    return SmokeResult(platform=p, placement="native", reference=f"{IMAGE}@sha256:aa", requests=10,
                       errors=0, error_rate=0.0, p50_ms=2.0, p95_ms=3.0, bound_ms=250, max_error_rate=0.0,
                       passed=ok, reason=reason)


def run(**over: Any) -> Verdict:
    args: dict[str, Any] = dict(
        run_id="run-1", project="wine", image=IMAGE, created="2024-01-01T00:00:00Z",
        source=SourceInfo(sha="abc"), expected_platforms=[AMD, ARM],
        platforms=[platform(AMD), platform(ARM, placement="emulated", emulated=5.0)],
        model=model(), model_required=True, smoke=[smoke(AMD), smoke(ARM)], smoke_required=True,
        emulation_budget_seconds=None,
    )
    args.update(over)
    return decide(**args)


def test_all_gates_passed_is_a_pass() -> None:
    v = run()
    assert v.passed and v.reasons == []
    assert v.emulated_seconds == 5.0
    assert Verdict.model_validate_json(v.model_dump_json()) == v


def test_failed_platform_reason_is_its_failure_message() -> None:
    v = run(platforms=[platform(AMD), platform(ARM, ok=False, failure="tests failed: 1 of 3")])
    assert not v.passed
    assert v.reasons == ["linux/arm64: tests failed: 1 of 3"]


def test_failed_platform_without_detail_names_its_status() -> None:
    v = run(platforms=[platform(AMD, ok=False), platform(ARM)], smoke=[smoke(ARM)])
    assert v.reasons == ["linux/amd64: failed"]


def test_passed_status_without_digest_is_not_ok() -> None:
    v = run(platforms=[platform(AMD, digest=None), platform(ARM)], smoke=[smoke(ARM)])
    assert not v.passed
    assert [r for r in v.reasons if r.startswith("linux/amd64")]


def test_missing_and_unexpected_platforms() -> None:
    v = run(platforms=[platform(AMD), platform("linux/s390x")], smoke=[smoke(AMD)])
    assert "linux/arm64: no result" in v.reasons
    assert "linux/s390x: unexpected platform result" in v.reasons
    assert not v.passed


def test_model_gate_failure_reason() -> None:
    v = run(model=model(False, "accuracy 0.90 < champion 0.95"))
    assert v.reasons == ["model gate: accuracy 0.90 < champion 0.95"]
    assert run(model=model(False)).reasons == ["model gate: failed"]


def test_required_model_missing() -> None:
    assert run(model=None).reasons == ["model: no gate decision"]
    assert run(model=None, model_required=False).passed


def test_smoke_failure_and_missing_smoke() -> None:
    v = run(smoke=[smoke(AMD, False, "p95 400 ms > 250 ms")])
    assert v.reasons == ["linux/arm64: smoke test did not run", "linux/amd64: smoke: p95 400 ms > 250 ms"]
    assert run(smoke=[smoke(AMD)], smoke_required=False).passed


def test_no_smoke_reason_for_a_platform_that_already_failed() -> None:
    v = run(platforms=[platform(AMD), platform(ARM, ok=False, failure="build failed")], smoke=[smoke(AMD)])
    assert v.reasons == ["linux/arm64: build failed"]


def test_emulation_budget() -> None:
    over = run(emulation_budget_seconds=4.0)
    assert over.reasons == ["emulation budget: 5 s emulated > 4 s"]
    assert run(emulation_budget_seconds=5.0).passed


def test_gate_reasons_come_before_stage_notes() -> None:
    v = run(extra_reasons=["release builds skipped: model gate failed"], model=model(False, "worse"))
    assert v.reasons == ["model gate: worse", "release builds skipped: model gate failed"]


def test_a_model_stage_that_never_decided_is_read_first() -> None:
    v = run(extra_reasons=["release builds skipped: x"], stage_error="model stage: MLflow unreachable",
            model=None, model_required=True)
    assert v.reasons[0] == "model stage: MLflow unreachable"
    assert v.reasons[-1] == "release builds skipped: x"


def test_summary_is_notification_sized() -> None:
    s = run(model=model(False, "worse")).summary()
    assert s["passed"] is False and s["reasons"] == ["model gate: worse"]
    assert s["platforms"][ARM] == {"status": "passed", "placement": "emulated", "seconds": 5.0}
    assert s["model"] == {"version": "2", "passed": False}


@given(
    plat_ok=st.lists(st.booleans(), min_size=2, max_size=2),
    smoke_ok=st.lists(st.booleans(), min_size=2, max_size=2),
    model_ok=st.booleans(),
)
def test_passed_iff_every_gate_passed(plat_ok: list[bool], smoke_ok: list[bool], model_ok: bool) -> None:
    plats = [AMD, ARM]
    v = run(
        platforms=[platform(p, ok=ok, failure=None if ok else "boom")
                   for p, ok in zip(plats, plat_ok, strict=True)],
        smoke=[smoke(p, ok, "slow") for p, ok, pok in zip(plats, smoke_ok, plat_ok, strict=True) if pok],
        model=model(model_ok, "worse"),
    )
    assert v.passed == (all(plat_ok) and all(smoke_ok[i] for i in range(2) if plat_ok[i]) and model_ok)
    for p, ok in zip(plats, plat_ok, strict=True):
        assert (f"{p}: boom" in v.reasons) == (not ok)
    assert ("model gate: worse" in v.reasons) == (not model_ok)
    assert v.passed == (v.reasons == [])


def test_jobs_stopped_by_the_model_are_not_repeated_per_platform() -> None:
    stopped = [
        platform(p, ok=False, failure="x").model_copy(update={"failure": FailureDetail(
            step="model", message="release build skipped: model gate failed")})
        for p in (AMD, ARM)
    ]
    v = run(platforms=stopped, model=model(False, "worse"), smoke=[],
            extra_reasons=["release builds skipped: model gate failed"])
    assert v.reasons == ["model gate: worse", "release builds skipped: model gate failed"]
    # without a stage note each platform says why it stopped
    v = run(platforms=stopped, model=model(False, "worse"), smoke=[])
    assert v.reasons[:2] == [f"{AMD}: release build skipped: model gate failed",
                             f"{ARM}: release build skipped: model gate failed"]
