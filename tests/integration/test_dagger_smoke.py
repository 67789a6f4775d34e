"""Smoke under Dagger: each platform's image runs as a Dagger service in the session that built
it, tunnelled to this host, and the Docker path's smoke client and limits judge it.

The real dagger-io SDK talks to the schema-validating fake engine (the one stand-in; every
document is validated against the Dagger schema by the fixture). The fake's host tunnel
starts a real HTTP stand-in on a port of this host, so the health wait, the requests, the
p95 and the error rate are measured for real; `serve(...)` rules make a platform's service
fail (HTTP 500s, slow answers, a start that fails). The release tests run the real release
(`ci run --engine dagger`, `python -m pipelines.release` under a `dagger run` session) with
the per-platform digests pre-pushed to the real registry, so merge, tags and verdict are real.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from ci.adapters.engines.dagger import DaggerEngine
from ci.core.config import SmokeConfig
from ci.core.plan import Placement
from ci.core.results import JobSpec, PlatformResult, SourceInfo
from tests.fixtures.dagger_fake import DaggerFake, clean_environ
from tests.fixtures.registry import Registry, push_tiny_image
from tests.integration.test_dagger_pipeline import make_service

pytestmark = [pytest.mark.integration, pytest.mark.dagger_fake, pytest.mark.timeout(300)]

AMD, ARM = "linux/amd64", "linux/arm64"
SMOKE = """
[smoke]
requests = 12
concurrency = 3
port = 8080
p95_ms = 1000
p95_ms_emulated = 4000
startup_timeout_seconds = 10
"""


# ------------------------------------------------------------------ the engine's own step


def _spec(platform: str, kind: str, out: Path, image: str) -> JobSpec:
    return JobSpec(
        platform=platform, project="svc", image=image, context=str(out), dockerfile="Dockerfile",
        placement=Placement(kind=kind, runner="default", engine="dagger", reason="test"),  # type: ignore[arg-type]
        test_command=["true"], output_dir=str(out / platform.replace("/", "-")), run_id="run-7",
        source=SourceInfo(sha="abc123"),
    )


def _passed(spec: JobSpec, digest: str) -> PlatformResult:
    return PlatformResult(project="svc", image=spec.image, platform=spec.platform,
                          runner="default", engine="dagger", placement=spec.placement.kind,
                          status="passed", digest=digest, run_id=spec.run_id)


def _smoke(fake: DaggerFake, tmp_path: Path, config: SmokeConfig,
           failed_arm: bool = False) -> list[PlatformResult]:
    """Both platforms through `DaggerEngine.smoke_passed` on the `dagger run` session path."""
    image = "127.0.0.1:5999/team/svc"
    specs = [_spec(AMD, "native", tmp_path, image), _spec(ARM, "emulated", tmp_path, image)]
    results = [_passed(specs[0], "sha256:" + "a" * 64), _passed(specs[1], "sha256:" + "b" * 64)]
    if failed_arm:
        results[1] = results[1].model_copy(update={"status": "failed", "digest": None})
    engine = DaggerEngine(environ={**clean_environ(), **fake.session_env()}, smoke=config)
    return anyio.run(engine.smoke_passed, specs, results)


def _asked(fake: DaggerFake, field: str, arg: str) -> list[object]:
    """The distinct values of one argument of `field`, in the order first asked."""
    seen: list[object] = []
    for call in fake.calls(field):
        if call.get(arg) not in seen:
            seen.append(call.get(arg))
    return seen


def test_each_platform_runs_as_a_service_by_digest_and_is_stopped(
    dagger_fake: DaggerFake, tmp_path: Path
) -> None:
    config = SmokeConfig(requests=10, concurrency=2, port=8080, p95_ms=1000)
    amd, arm = _smoke(dagger_fake, tmp_path, config)

    for r, kind, bound in ((amd, "native", 1000), (arm, "emulated", config.p95_ms_emulated)):
        assert r.smoke is not None and r.smoke.passed, r.smoke
        assert (r.smoke.platform, r.smoke.placement, r.smoke.reference) == (
            r.platform, kind, r.reference)
        assert r.smoke.requests == 10 and r.smoke.errors == 0 and r.smoke.bound_ms == bound
    # what the engine was asked (each document repeats the chain it builds on): the
    # platform's image BY DIGEST as a service on the port, tunnelled to this host, started,
    # then tunnel and service stopped
    assert _asked(dagger_fake, "from", "address") == [amd.reference, arm.reference]
    assert _asked(dagger_fake, "container", "platform") == [AMD, ARM]
    assert _asked(dagger_fake, "withExposedPort", "port") == [8080]
    assert _asked(dagger_fake, "asService", "useEntrypoint") == [True]
    assert {p["backend"] for c in dagger_fake.calls("tunnel") for p in c["ports"]} == {8080}
    services = dagger_fake.services()
    assert [(s.platform, s.address, s.backend) for s in services] == [
        (AMD, amd.reference, 8080), (ARM, arm.reference, 8080)]
    for s in services:
        assert s.stopped and not s.running
        assert s.requests[0] == ("GET", "/health")
        assert [p for m, p in s.requests if m == "POST"] == ["/predict"] * 10
    assert len(dagger_fake.calls("stop")) == 4  # each tunnel, then each service
    assert dagger_fake.engine.invalid == []


def test_the_bound_of_the_placement_applies_and_a_failed_job_is_not_smoked(
    dagger_fake: DaggerFake, tmp_path: Path
) -> None:
    """30 ms answers: over the native bound (10 ms), well inside the emulated one."""
    dagger_fake.serve(delay_ms=30)
    config = SmokeConfig(requests=6, concurrency=2, p95_ms=10, p95_ms_emulated=5000)
    amd, arm = _smoke(dagger_fake, tmp_path, config)
    assert amd.smoke is not None and not amd.smoke.passed
    assert amd.smoke.reason.endswith("ms > 10 ms (native bound)"), amd.smoke.reason
    assert arm.smoke is not None and arm.smoke.passed and arm.smoke.bound_ms == 5000

    dagger_fake.engine.stand_ins.clear()
    amd, arm = _smoke(dagger_fake, tmp_path, config, failed_arm=True)
    assert arm.smoke is None and [s.platform for s in dagger_fake.services()] == [AMD]


def test_a_service_that_cannot_start_or_never_gets_healthy_is_a_failed_smoke(
    dagger_fake: DaggerFake, tmp_path: Path
) -> None:
    dagger_fake.serve(AMD, fail_start="python3: can't open file '/app/serve.py'")
    dagger_fake.serve(ARM, health_status=503)
    config = SmokeConfig(requests=4, startup_timeout_seconds=1.5)
    amd, arm = _smoke(dagger_fake, tmp_path, config)
    assert amd.smoke is not None and not amd.smoke.passed and amd.smoke.requests == 0
    assert amd.smoke.reason.startswith(f"cannot start {amd.reference} as a service: exit 1:")
    assert "can't open file '/app/serve.py'" in amd.smoke.reason
    assert arm.smoke is not None and not arm.smoke.passed and arm.smoke.requests == 0
    assert "/health not healthy within 1.5 s (last: HTTP 503)" in arm.smoke.reason
    assert all(s.stopped for s in dagger_fake.services())


# ------------------------------------------------------------------ the whole release


def _project(tmp_path: Path, registry: Registry, fake: DaggerFake, repo: str) -> tuple[Path, str, str]:
    image = f"{registry.host}/{repo}"
    amd = push_tiny_image(registry.url, repo, AMD)
    arm = push_tiny_image(registry.url, repo, ARM)
    fake.engine.publish_digests = {"linux-amd64": amd, "linux-arm64": arm}
    project = make_service(tmp_path / "svc", image)
    with (project / "ci.toml").open("a") as f:
        f.write(SMOKE)
    return project, amd, arm


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {**clean_environ(), **extra, "PATH": "/usr/bin:/bin"}
    return {k: v for k, v in env.items() if not k.startswith(("GITHUB_", "GITLAB_"))
            and (not k.startswith("MACI_") or k.startswith("MACI_DAGGER_FAKE_"))}


def test_ci_run_engine_dagger_smokes_each_platform_and_publishes(
    dagger_fake: DaggerFake, registry: Registry, tmp_path: Path
) -> None:
    repo = "dagger/smoked"
    project, amd, arm = _project(tmp_path, registry, dagger_fake, repo)
    proc = subprocess.run([sys.executable, "-m", "ci", "run", "--engine", "dagger", "--json"],
                          cwd=project, env=_env(dagger_fake.cli_env()), capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    verdict = out["verdict"]
    assert verdict["passed"] is True and verdict["reasons"] == []
    smoke = {s["platform"]: s for s in verdict["smoke"]}
    assert sorted(smoke) == [AMD, ARM]
    image = f"{registry.host}/{repo}"
    assert (smoke[AMD]["placement"], smoke[AMD]["bound_ms"]) == ("native", 1000)
    assert (smoke[ARM]["placement"], smoke[ARM]["bound_ms"]) == ("emulated", 4000)
    for platform, digest in ((AMD, amd), (ARM, arm)):
        s = smoke[platform]
        assert s["passed"] and s["requests"] == 12 and s["errors"] == 0
        assert s["reference"] == f"{image}@{digest}"
    # the services ran in the child sessions the fake CLI opened, and were stopped
    assert dagger_fake.sessions(), "no CLI session: the provisioning path was not used"
    assert sorted((s.platform, s.address) for s in dagger_fake.services()) == [
        (AMD, f"{image}@{amd}"), (ARM, f"{image}@{arm}")]
    assert all(s.stopped for s in dagger_fake.services())
    # each platform's smoke ran in the session that built and published its digest
    published_by = {ref.rpartition("@")[2]: token for token, ref in dagger_fake.engine.published}
    for s in dagger_fake.services():
        assert s.session == published_by[s.address.rpartition("@")[2]], s.platform
    assert sorted(out["published"]["manifests"].values()) == sorted([amd, arm])
    assert len(registry.indexes(repo)) == 1 and registry.tags(repo)


def test_a_failing_smoke_on_arm64_rejects_the_release_and_nothing_moves(
    dagger_fake: DaggerFake, registry: Registry, tmp_path: Path
) -> None:
    """`dagger run python -m pipelines.release`: arm64's service answers 500 to every
    prediction; the verdict names it and neither an index nor a tag is published."""
    repo = "dagger/rejected"
    project, amd, arm = _project(tmp_path, registry, dagger_fake, repo)
    dagger_fake.serve(ARM, status=500)
    proc = subprocess.run([sys.executable, "-m", "pipelines.release", "--json"], cwd=project,
                          env=_env(dagger_fake.session_env()), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["verdict"]["passed"] is False and out["published"] is None
    assert out["verdict"]["reasons"] == [
        f"{ARM}: smoke: error rate 100.0% > 0.0% (12/12 failed: HTTP 500 x12)"]
    smoke = {s["platform"]: s for s in out["verdict"]["smoke"]}
    assert smoke[AMD]["passed"] and not smoke[ARM]["passed"]
    assert smoke[ARM]["reference"].endswith(arm)
    assert registry.tags(repo) == [] and registry.indexes(repo) == []
    image = f"{registry.host}/{repo}"
    assert sorted((s.platform, s.address) for s in dagger_fake.services()) == [
        (AMD, f"{image}@{amd}"), (ARM, f"{image}@{arm}")]
    assert all(s.stopped for s in dagger_fake.services())
    assert dagger_fake.engine.invalid == []
