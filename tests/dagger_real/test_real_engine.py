"""The same platform jobs on a REAL Dagger engine (for anyone who has one).

Skipped when no `dagger` CLI is on PATH, even with CI=true: no Dagger engine can run on the
project's own machines (its CLI and engine image cannot be downloaded there), so the fake
engine suite (tests/integration/test_dagger_engine.py) is what CI proves. Knobs:
MACI_DAGGER_REAL_BASE (base image the engine can pull), MACI_DAGGER_REAL_IMAGE (repository
to push to; default an anonymous ttl.sh one), MACI_DAGGER_REAL_ARM_HOST (a native arm64
engine, e.g. tcp://arm-box:8080 or kube-pod://...).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import anyio
import pytest

from ci.adapters.engines.dagger_routing import Options, run_jobs_dagger
from ci.core.plan import Placement, RunnerInfo
from ci.core.results import JobSpec, SourceInfo

pytestmark = [pytest.mark.dagger_real, pytest.mark.timeout(1800)]

JUNIT = ('<testsuite name="smoke" tests="1" failures="0" errors="0">'
         '<testcase classname="smoke" name="import_app"/></testsuite>')


@pytest.fixture
def dagger_cli() -> str:
    path = shutil.which("dagger")
    if path is None:
        pytest.skip("no `dagger` CLI on PATH: a real Dagger engine cannot run on this machine "
                    "(CLI and engine image are not downloadable here); the fake-engine suite "
                    "covers this path in CI")
    return path


def job(ctx: Path, out: Path, platform: str, runner: str, host: str, kind: str) -> JobSpec:
    base = os.environ.get("MACI_DAGGER_REAL_BASE", "docker.io/library/python:3.12-slim")
    image = os.environ.get("MACI_DAGGER_REAL_IMAGE", f"ttl.sh/maci-{secrets.token_hex(6)}")
    return JobSpec(
        platform=platform,
        placement=Placement(kind=kind, runner=runner, engine="dagger", host=host),  # type: ignore[arg-type]
        project="svc", image=image, context=str(ctx), dockerfile=str(ctx / "Dockerfile"),
        build_target="runtime", test_target=None,
        test_command=["sh", "-c", f"python3 app.py && printf '{JUNIT}' > /tmp/maci-junit.xml"],
        build_args={"BASE": base}, labels={"dev.maci.platform": platform},
        output_dir=str(out / platform.replace("/", "-")), run_id=f"real-{secrets.token_hex(3)}",
        source=SourceInfo(sha="0" * 40),
    )


def test_platform_jobs_on_a_real_engine(dagger_cli: str, tmp_path: Path) -> None:
    ctx = tmp_path / "svc"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("ARG BASE\nFROM ${BASE} AS runtime\nWORKDIR /app\n"
                                    "COPY app.py .\nCMD [\"python3\", \"app.py\"]\n")
    (ctx / "app.py").write_text("print('ok')\n")
    arm_host = os.environ.get("MACI_DAGGER_REAL_ARM_HOST", "")
    runners = [RunnerInfo(name="default", engine="dagger", reachable=True)]
    if arm_host:
        runners.append(RunnerInfo(name="arm", engine="dagger", host=arm_host, reachable=True,
                                  native="linux/arm64"))
    specs = [job(ctx, tmp_path, "linux/amd64", "default", "", "native"),
             job(ctx, tmp_path, "linux/arm64", "arm" if arm_host else "default", arm_host,
                 "native" if arm_host else "emulated")]
    specs[1] = specs[1].model_copy(update={"image": specs[0].image, "run_id": specs[0].run_id})
    results = anyio.run(lambda: run_jobs_dagger(specs, runners, dict(os.environ),
                                                options=Options(cleanup_tmp_tags=False)))
    for result in results:
        assert result.status == "passed", result.failure
        assert result.digest and result.digest.startswith("sha256:")
        assert result.tests is not None and result.tests.total == 1
    assert len({r.digest for r in results}) == 2
