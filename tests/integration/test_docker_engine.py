"""ci.adapters.engines.docker on the real stack: local dockerd + BuildKit + qemu + a real registry.

One module-scoped run builds the sample app for linux/amd64 (native) and linux/arm64 (qemu)
concurrently; later tests reuse its BuildKit cache, so each adds only seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from ci.adapters.engines.docker import DockerEngine, engine_factory
from ci.adapters.registry import ImageRef, RegistryClient
from ci.core import config as cfg
from ci.core.placement import qemu_fallback
from ci.core.plan import Placement, RunnerInfo
from ci.core.results import JobSpec, PlatformResult
from ci.stages.fanout import run_jobs
from ci.stages.prepare import Prepared, prepare
from tests.fixtures.registry import FaultProxy, Registry
from tests.fixtures.sampleapp import head_sha, make_project, remove_local_images

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Built:
    project: Path
    config: cfg.Config
    prepared: Prepared
    results: dict[str, PlatformResult]
    seconds: float
    repo: str


def load(project: Path) -> cfg.Config:
    return cfg.load(project / "ci.toml", {}, project)


def run(specs: list[JobSpec], registry: RegistryClient | None, *, push: bool = True,
        replace: object = None) -> list[PlatformResult]:
    factory = engine_factory(registry, push=push)
    return anyio.run(lambda: run_jobs(specs, factory, {"local": 2}, replace=replace))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def built(docker_stack: None, registry_proxy: FaultProxy,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    repo = f"it/engine-{secrets.token_hex(3)}"
    project = make_project(tmp_path_factory.mktemp("engine") / "app",
                           f"{registry_proxy.host}/{repo}")
    config = load(project)
    prepared = prepare(config, environ=dict(os.environ))
    client = RegistryClient(registry_proxy.host)
    started = time.monotonic()
    results = run(prepared.specs, client)
    yield Built(project, config, prepared, {r.platform: r for r in results},
                time.monotonic() - started, repo)
    remove_local_images(config.project.image)


def test_native_and_emulated_jobs_pass_and_push_by_digest(built: Built, registry: Registry) -> None:
    amd, arm = built.results["linux/amd64"], built.results["linux/arm64"]
    assert (amd.status, amd.placement, amd.runner) == ("passed", "native", "local")
    assert (arm.status, arm.placement, arm.runner) == ("passed", "emulated", "local")
    assert amd.emulated_seconds == 0 and arm.emulated_seconds > 0
    assert set(arm.durations) == {"build_test", "test", "build_release", "push"}
    for r in (amd, arm):
        assert r.tests is not None and (r.tests.total, r.tests.passed) == (3, 3)
        assert r.digest and r.digest.startswith("sha256:")
    # no tag at all: the temporary push tags were removed again
    assert registry.tags(built.repo) == []
    client = RegistryClient(registry.host)
    assert client.descriptor(built.repo, arm.digest or "")["platform"] == {
        "architecture": "arm64", "os": "linux"}
    assert client.descriptor(built.repo, amd.digest or "")["platform"]["architecture"] == "amd64"
    print(f"\n[measure] engine jobs cold-ish: amd64 {amd.seconds:.1f}s {amd.durations}; "
          f"arm64 {arm.seconds:.1f}s (emulated {arm.emulated_seconds:.1f}s) {arm.durations}; "
          f"wall {built.seconds:.1f}s")


def test_pushed_images_carry_oci_labels(built: Built, registry: Registry) -> None:
    arm = built.results["linux/arm64"]
    client = RegistryClient(registry.host)
    manifest = client.get_manifest(built.repo, arm.digest or "")
    config = json.loads(client.get_blob(built.repo, manifest.data["config"]["digest"]))
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == head_sha(built.project)
    assert labels["org.opencontainers.image.title"] == "sampleapp"
    assert "dev.maci.run-id" not in labels  # nothing per run: one commit, one digest
    assert labels["dev.maci.platform"] == "linux/arm64"
    when = subprocess.run(["git", "-C", str(built.project), "show", "-s", "--format=%ct", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    created = datetime.fromtimestamp(int(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert labels["org.opencontainers.image.created"] == created  # the commit's time
    assert config["architecture"] == "arm64"


def test_junit_and_logs_are_collected(built: Built) -> None:
    arm = built.results["linux/arm64"]
    assert arm.tests is not None and arm.tests.junit_path and arm.tests.log_path
    junit = Path(arm.tests.junit_path).read_text()
    assert "test_image_built_for_this_platform" in junit
    out = Path(built.prepared.specs[1].output_dir)
    assert "--platform" not in (out / "build-test.log").read_text()  # a log, not the argv
    assert "passed" in (out / "test.log").read_text()
    assert {"build-test.log", "test.log", "build-release.log", "push.log"} <= {
        p.name for p in out.iterdir()}


def test_test_failing_only_on_arm64_fails_that_platform(built: Built, registry: Registry) -> None:
    specs = [s.model_copy(update={"test_env": {"SAMPLE_FAIL_ON_ARM64": "1"}})
             for s in built.prepared.specs]
    amd, arm = run(specs, RegistryClient(registry.host), push=False)
    assert amd.status == "passed" and amd.tests is not None and amd.tests.failed == 0
    assert arm.status == "failed" and arm.digest is None
    assert arm.tests is not None and (arm.tests.failed, arm.tests.passed) == (1, 2)
    assert arm.failure is not None and arm.failure.step == "test"
    assert "tests failed on linux/arm64 (1 failed" in arm.failure.message
    assert "simulated arm64-only bug" in arm.failure.stdout_tail
    assert "build_release" not in arm.durations


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "nonce").write_text(secrets.token_hex(8))  # a fresh cache key for every run
    return ctx


def _spec(built: Built, ctx: Path, **update: object) -> JobSpec:
    base = built.prepared.specs[0]
    return base.model_copy(update={"context": str(ctx), "dockerfile": str(ctx / "Dockerfile"),
                                   "output_dir": str(ctx / "out"), **update})


def test_build_error_is_a_failed_result(built: Built, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "ARG BASE\nFROM ${BASE} AS test\nCOPY nonce /\n"
                             "RUN echo broken-step && exit 3\n")
    [res] = run([_spec(built, ctx)], None, push=False)
    assert res.status == "failed" and res.failure is not None
    assert res.failure.step == "build_test" and res.failure.exit_code == 1
    assert "broken-step" in res.failure.stderr_tail + res.failure.stdout_tail


def test_missing_junit_after_failing_command_is_a_failure(built: Built) -> None:
    spec = built.prepared.specs[0].model_copy(update={
        "test_command": ["python3", "-c", "raise SystemExit(4)"]})
    [res] = run([spec], None, push=False)
    assert res.status == "failed" and res.tests is not None
    assert (res.tests.errors, res.tests.junit_path) == (1, None)
    assert res.failure is not None and res.failure.exit_code == 4


def test_test_timeout_is_a_failed_result_and_removes_the_container(built: Built) -> None:
    spec = built.prepared.specs[0].model_copy(update={
        "test_command": ["sleep", "60"], "test_timeout": 2.0,
        "run_id": f"timeout-{secrets.token_hex(2)}"})
    started = time.monotonic()
    [res] = run([spec], None, push=False)
    assert time.monotonic() - started < 30
    assert res.status == "failed" and res.failure is not None
    assert "timed out after 2 s" in res.failure.message
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=maci-{spec.run_id}"],
                          capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_ca_bundle_reaches_the_build_as_a_secret_only(built: Built, tmp_path: Path) -> None:
    bundle = tmp_path / "extra-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nnot-really\n-----END CERTIFICATE-----\n")
    import hashlib

    want = hashlib.sha256(bundle.read_bytes()).hexdigest()
    ctx = _context(tmp_path, "ARG BASE\nFROM ${BASE} AS test\nCOPY nonce /\n"
                             "RUN --mount=type=secret,id=ca sha256sum /run/secrets/ca > /ca.sum\n")
    check = f"grep -q {want} /ca.sum && test ! -s /run/secrets/ca && echo ca-ok"
    spec = _spec(built, ctx, ca_bundle=str(bundle), build_target="test",
                 test_command=["sh", "-c", check])
    [res] = run([spec], None, push=False)
    assert res.status == "passed", res.failure
    assert "ca-ok" in Path(ctx / "out/test.log").read_text()


def test_runner_unreachable_at_run_time_falls_back_to_qemu(built: Built) -> None:
    arm = built.prepared.specs[1]
    dead = f"unix:///tmp/maci-gone-{secrets.token_hex(3)}.sock"
    spec = arm.model_copy(update={"placement": Placement(
        kind="native", runner="arm-box", engine="docker", host=dead, reason="planned")})
    runners = [RunnerInfo(name="arm-box", engine="docker", host=dead, reachable=True,
                          native="linux/arm64"),
               RunnerInfo(name="local", engine="docker", reachable=True, native="linux/amd64",
                          emulates=["linux/arm64"])]
    [res] = run([spec], None, push=False, replace=qemu_fallback(runners, "qemu"))
    assert (res.status, res.runner, res.placement) == ("passed", "local", "emulated")
    assert "runner 'arm-box' unreachable at run time" in res.placement_reason
    assert res.emulated_seconds > 0
    print(f"\n[measure] fallback job durations {res.durations}")
    [failed] = run([spec], None, push=False, replace=qemu_fallback(runners, "fail"))
    assert failed.status == "error" and failed.failure is not None
    assert "does not answer" in failed.failure.message


def test_push_failure_is_an_error_result_that_keeps_the_tests(built: Built) -> None:
    from tests.fixtures.procs import free_port

    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    spec = built.prepared.specs[0].model_copy(update={"image": f"{host}/it/nowhere"})
    [res] = run([spec], RegistryClient(host, attempts=1))
    assert res.status == "error" and res.digest is None
    assert res.failure is not None and res.failure.step == "push"
    assert res.tests is not None and res.tests.passed == 3
    assert "push" in res.durations
    remove_local_images(spec.image)


def test_ping_reports_the_daemon(built: Built) -> None:
    info = DockerEngine().ping()
    assert info["platform"] == "linux/amd64" and info["version"]
    assert ImageRef.parse(built.config.project.image).repository == built.repo
