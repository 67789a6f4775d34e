"""ci.stages.smoke on the real local dockerd: a tiny stdlib serving app, pushed by digest.

The local copies are removed after the push, so every smoke run pulls by digest first, as a
runner that never built the image would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from ci.adapters import proc
from ci.core.config import SmokeConfig
from ci.stages.smoke import run_smoke, smoke
from tests.fixtures.procs import require, require_tool
from tests.fixtures.registry import Registry

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[1] / "data" / "smokeapp"
LABEL = "dev.maci.smoke=1"
PAYLOAD = {"features": [1, 2, 3.5]}


@dataclass(frozen=True)
class Images:
    ok_amd64: str
    unhealthy_amd64: str
    broken_amd64: str
    ok_arm64: str
    repo: str


def _docker(*args: str, timeout: float = 300) -> proc.Result:
    return proc.run(["docker", *args], timeout=timeout, step=f"docker {args[0]}")


def _build_and_push(repo: str, mode: str, arch: str) -> str:
    tag = f"{repo}:{mode}-{arch}"
    _docker("buildx", "build", "--platform", f"linux/{arch}", "--build-arg",
            f"BASE=maci/python:bookworm-{arch}", "--build-arg", f"MODE={mode}", "-t", tag, "--load",
            str(APP))
    pushed = _docker("push", tag)
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed.stdout)
    assert digest, pushed.stdout
    _docker("rmi", tag)  # the smoke test must pull by digest, like a fresh runner
    return f"{repo}@{digest.group(1)}"


@pytest.fixture(scope="module")
def images(registry: Registry) -> Iterator[Images]:
    require_tool("docker")
    require(proc.run(["docker", "info"], check=False, timeout=15).ok, "docker daemon not reachable")
    for arch in ("amd64", "arm64"):
        require(proc.run(["docker", "image", "inspect", f"maci/python:bookworm-{arch}"], check=False,
                         timeout=15).ok, f"base image maci/python:bookworm-{arch} missing")
    repo = f"{registry.host}/maci-smoke/app"
    built = Images(
        ok_amd64=_build_and_push(repo, "ok", "amd64"),
        unhealthy_amd64=_build_and_push(repo, "unhealthy", "amd64"),
        broken_amd64=_build_and_push(repo, "broken", "amd64"),
        ok_arm64=_build_and_push(repo, "ok", "arm64"),
        repo=repo,
    )
    yield built
    refs = [built.ok_amd64, built.unhealthy_amd64, built.broken_amd64, built.ok_arm64]
    proc.run(["docker", "rmi", *refs], check=False, timeout=60)  # what the smoke runs pulled


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """Every smoke container is removed, whatever the outcome."""
    yield
    left = proc.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}"], timeout=15).stdout.split()
    assert left == [], f"smoke containers left behind: {left}"


def test_native_smoke_passes(images: Images, no_leftovers: None) -> None:
    cfg = SmokeConfig(requests=60, concurrency=4, payload=PAYLOAD, p95_ms=1000)  # 2 shared cores
    started = time.monotonic()
    r = run_smoke(platform="linux/amd64", placement="native", reference=images.ok_amd64, config=cfg)
    elapsed = time.monotonic() - started
    assert r.passed, r.reason
    assert (r.platform, r.placement, r.reference) == ("linux/amd64", "native", images.ok_amd64)
    assert r.requests == 60 and r.errors == 0 and r.error_rate == 0.0
    assert 0 < r.p50_ms <= r.p95_ms <= 1000 and r.bound_ms == 1000
    assert 0 < r.seconds <= elapsed
    print(f"native smoke: p50 {r.p50_ms} ms p95 {r.p95_ms} ms, {r.seconds:.2f} s")


def test_impossible_p95_bound_fails_with_reason(images: Images, no_leftovers: None) -> None:
    cfg = SmokeConfig(requests=20, concurrency=2, payload=PAYLOAD, p95_ms=0.001)
    r = run_smoke(platform="linux/amd64", placement="native", reference=images.ok_amd64, config=cfg)
    assert not r.passed and r.errors == 0 and r.requests == 20
    assert re.fullmatch(r"p95 [\d.]+ ms > 0\.001 ms \(native bound\)", r.reason), r.reason


def test_health_never_answers_fails_within_startup_timeout(images: Images, no_leftovers: None) -> None:
    cfg = SmokeConfig(requests=5, startup_timeout_seconds=3)
    started = time.monotonic()
    r = run_smoke(platform="linux/amd64", placement="native", reference=images.unhealthy_amd64, config=cfg)
    elapsed = time.monotonic() - started
    assert not r.passed and r.requests == 0
    assert "/health not healthy within 3 s (last: HTTP 503)" in r.reason
    assert "smokeapp mode=unhealthy listening on 8080" in r.reason  # the container's last log lines
    assert elapsed < 3 + 10, elapsed


def test_failing_predictions_fail_on_error_rate(images: Images, no_leftovers: None) -> None:
    cfg = SmokeConfig(requests=10, concurrency=3, max_error_rate=0.5)
    r = run_smoke(platform="linux/amd64", placement="native", reference=images.broken_amd64, config=cfg)
    assert not r.passed and r.errors == 10 and r.error_rate == 1.0
    assert r.reason.startswith("error rate 100.0% > 50.0% (10/10 failed: HTTP 500 x10)")


@pytest.mark.slow
def test_emulated_arm64_uses_the_emulated_bound(images: Images, no_leftovers: None) -> None:
    arch = proc.run(["docker", "image", "inspect", "--format", "{{.Architecture}}", images.ok_arm64],
                    check=False, timeout=15)
    cfg = SmokeConfig(requests=12, concurrency=2, payload=PAYLOAD, p95_ms=0.001, p95_ms_emulated=5000,
                      startup_timeout_seconds=60)
    r = run_smoke(platform="linux/arm64", placement="emulated", reference=images.ok_arm64, config=cfg)
    assert r.passed, r.reason  # the native bound (0.001 ms) would fail it
    assert r.placement == "emulated" and r.bound_ms == 5000 and r.requests == 12
    pulled = proc.run(["docker", "image", "inspect", "--format", "{{.Architecture}}", images.ok_arm64],
                      timeout=15).stdout.strip()
    assert not arch.ok and pulled == "arm64"  # pulled by digest for the smoke run, and really arm64
    print(f"emulated smoke: p50 {r.p50_ms} ms p95 {r.p95_ms} ms, {r.seconds:.2f} s")


def test_missing_digest_and_tag_reference_fail_as_data(images: Images, no_leftovers: None) -> None:
    missing = f"{images.repo}@sha256:{'0' * 64}"
    r = run_smoke(platform="linux/amd64", placement="native", reference=missing, config=SmokeConfig())
    assert not r.passed and r.reason.startswith(f"cannot pull {missing}:")
    tagged = run_smoke(platform="linux/amd64", placement="native", reference=f"{images.repo}:ok",
                       config=SmokeConfig())
    assert not tagged.passed and "not a digest reference" in tagged.reason
    gone = run_smoke(platform="linux/arm64", placement="unavailable", reference=images.ok_arm64,
                     config=SmokeConfig())
    assert not gone.passed and gone.reason == "platform unavailable"


def test_container_removed_when_cancelled(images: Images, no_leftovers: None) -> None:
    cfg = SmokeConfig(startup_timeout_seconds=120)
    seen: list[str] = []

    async def main() -> None:
        with anyio.move_on_after(4) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: smoke(platform="linux/amd64", placement="native",
                                            reference=images.unhealthy_amd64, config=cfg))
                for _ in range(60):
                    await anyio.sleep(0.1)
                    out = await anyio.to_thread.run_sync(lambda: proc.run(
                        ["docker", "ps", "-q", "--filter", f"label={LABEL}"], timeout=15).stdout.split())
                    if out:
                        seen.extend(out)
                        break
        assert scope.cancelled_caught

    anyio.run(main)
    assert seen, "the smoke container never started"
