"""Base images per platform against the real Docker daemon and a real registry: a base that
does not resolve on its runner stops `ci plan`, `ci doctor`, `ci job` and `ci run` (exit 1,
one line naming the platform and the reference) before any work (issue #12 item 4)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.procs import require
from tests.fixtures.registry import Registry, push_tiny_image
from tests.fixtures.sampleapp import make_project

pytestmark = pytest.mark.integration

ISSUE_LINE = ("linux/arm/v7: base image maci/python:bookworm-arm not found on runner local "
              "(not in the image store of runner local; ")


def ci(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MACI_", "DAGGER_"))}
    return subprocess.run([sys.executable, "-m", "ci", *args], capture_output=True, text=True,
                          cwd=project, env=env, timeout=120, check=False)


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120,
                          check=check)


@pytest.fixture(scope="module")
def arm_stack() -> None:
    """A daemon, the amd64 base, and a qemu-arm handler, so linux/arm/v7 is placed (emulated)."""
    require(docker("info", check=False).returncode == 0, "no Docker daemon answers")
    require(docker("image", "inspect", "maci/python:bookworm-amd64", check=False).returncode == 0,
            "base image maci/python:bookworm-amd64 missing (run scripts/setup-stack.sh)")
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-arm")
    require(handler.exists() and "enabled" in handler.read_text(),
            "no qemu-arm binfmt handler (run `ci setup-qemu` or scripts/setup-stack.sh)")


@pytest.fixture
def tiny_bases(tmp_path: Path) -> Iterator[str]:
    """`maci-it/base-<nonce>:{debian_arch}` for amd64 and armhf: FROM scratch, so building
    the arm/v7 one needs no emulation; removed afterwards."""
    repo = f"maci-it/base-{secrets.token_hex(4)}"
    ctx = tmp_path / "base-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY marker /marker\n")
    (ctx / "marker").write_text("base\n")
    for platform, arch in (("linux/amd64", "amd64"), ("linux/arm/v7", "armhf")):
        docker("buildx", "build", "--platform", platform, "--load", "-t", f"{repo}:{arch}",
               str(ctx))
    yield repo
    docker("rmi", "--force", f"{repo}:amd64", f"{repo}:armhf", check=False)


def project(tmp_path: Path, registry: Registry, base: str | None = None,
            platforms: tuple[str, ...] = ("linux/amd64", "linux/arm/v7")) -> Path:
    root = make_project(tmp_path / "app", f"{registry.host}/it/base-check",
                        platforms=platforms)
    if base is not None:
        conf = root / "ci.toml"
        conf.write_text(conf.read_text().replace('"maci/python:bookworm-{arch}"', json.dumps(base)))
    return root


def bases(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    plan = json.loads(result.stdout)
    return {j["platform"]: (j["base"]["reference"], j["base"]["status"]) for j in plan["jobs"]}


def test_the_issue_arm_v7_base_named_by_arch_stops_plan_and_doctor(
    arm_stack: None, registry: Registry, tmp_path: Path
) -> None:
    """`{arch}` of linux/arm/v7 is `arm`: no such base on the runner, and Docker Hub is out of
    reach, so the plan stops there instead of a build failing later on a DNS error."""
    root = project(tmp_path, registry)
    plan = ci(root, "plan")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    [line] = [ln for ln in plan.stdout.splitlines() if "base image" in ln]
    assert line.startswith("missing base: " + ISSUE_LINE), line
    as_json = ci(root, "plan", "--json")
    assert as_json.returncode == 1, as_json.stderr
    assert bases(as_json) == {"linux/amd64": ("maci/python:bookworm-amd64", "local"),
                              "linux/arm/v7": ("maci/python:bookworm-arm", "missing")}
    assert json.loads(as_json.stdout)["ok"] is False

    doctor = ci(root, "doctor", "--json")
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    assert [(b["platform"], b["ok"]) for b in report["bases"]] == [
        ("linux/amd64", True), ("linux/arm/v7", False)]
    assert report["bases"][1]["line"].startswith(ISSUE_LINE)
    others = [report["registry"]["ok"], report["buildx"]["ok"], report["mlflow"]["ok"]]
    assert all(others) and all(r["reachable"] for r in report["runners"])  # only the base fails
    table = ci(root, "doctor")
    assert table.returncode == 1
    assert "missing base: " + ISSUE_LINE in table.stdout


def test_job_and_run_refuse_the_same_way_before_any_work(
    arm_stack: None, registry: Registry, tmp_path: Path
) -> None:
    root = project(tmp_path, registry)
    job = ci(root, "job", "--platform", "linux/arm/v7", "--output", "result.json")
    assert job.returncode == 1, job.stdout + job.stderr
    assert f"error: {ISSUE_LINE}" in job.stderr
    assert not (root / "result.json").exists()
    run = ci(root, "run", "release", "--dry-run")
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"error: {ISSUE_LINE}" in run.stderr
    assert not list((root / ".maci").glob("runs/*/linux-*"))  # no platform job started


def test_debian_arch_bases_present_pass_and_a_missing_or_foreign_one_fails(
    arm_stack: None, registry: Registry, tmp_path: Path, tiny_bases: str
) -> None:
    root = project(tmp_path, registry, f"{tiny_bases}:{{debian_arch}}")
    ok = ci(root, "plan", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert bases(ok) == {"linux/amd64": (f"{tiny_bases}:amd64", "local"),
                         "linux/arm/v7": (f"{tiny_bases}:armhf", "local")}
    assert ci(root, "doctor", "--json").returncode == 0

    # an amd64 image under the armhf name is no base for linux/arm/v7
    docker("tag", f"{tiny_bases}:amd64", f"{tiny_bases}:armhf")
    wrong = ci(root, "plan")
    assert wrong.returncode == 1
    assert (f"linux/arm/v7: base image {tiny_bases}:armhf not found on runner local (the image "
            "store of runner local has it only for linux/amd64; ") in wrong.stdout

    docker("rmi", f"{tiny_bases}:armhf")
    gone = ci(root, "plan", "--json")
    assert gone.returncode == 1
    assert bases(gone)["linux/arm/v7"] == (f"{tiny_bases}:armhf", "missing")
    assert bases(gone)["linux/amd64"] == (f"{tiny_bases}:amd64", "local")


def test_a_base_in_a_registry_resolves_there_and_a_404_is_missing(
    arm_stack: None, registry: Registry, tmp_path: Path
) -> None:
    repo = f"it/base-{secrets.token_hex(4)}"
    digest = push_tiny_image(registry.url, repo, "linux/arm/v7")
    pinned = project(tmp_path / "pinned", registry, f"{registry.host}/{repo}@{digest}",
                     platforms=("linux/arm/v7",))
    found = ci(pinned, "plan", "--json")
    assert found.returncode == 0, found.stdout + found.stderr
    assert bases(found) == {"linux/arm/v7": (f"{registry.host}/{repo}@{digest}", "registry")}

    tagged = project(tmp_path / "tagged", registry, f"{registry.host}/{repo}:{{debian_arch}}",
                     platforms=("linux/arm/v7",))
    absent = ci(tagged, "plan")
    assert absent.returncode == 1
    assert (f"linux/arm/v7: base image {registry.host}/{repo}:armhf not found on runner local "
            f"(not in the image store of runner local; registry {registry.host} has no such "
            "manifest (HTTP 404))") in absent.stdout


def test_an_unknown_template_field_exits_2_before_discovery(
    registry: Registry, tmp_path: Path
) -> None:
    root = project(tmp_path, registry, "maci/python:bookworm-{debianarch}")
    res = ci(root, "plan")
    assert res.returncode == 2
    assert "build.base_image" in res.stderr and "unknown field {debianarch}" in res.stderr
