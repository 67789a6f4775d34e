"""The Docker-engine release end to end, through the `ci` CLI, on the real stack.

Local dockerd (amd64 native, arm64 under qemu), a second dockerd as a separate runner, a
real registry behind a fault-injecting proxy, real git checkouts. Every failure scenario
checks the registry itself: no tag, no index.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.adapters.registry import RegistryClient
from ci.core import config as cfg
from ci.stages.publish import verify_index
from tests.fixtures.dockerd import Dockerd
from tests.fixtures.registry import TAG_PUT, FaultProxy, Registry
from tests.fixtures.sampleapp import head_sha, make_project, remove_local_images

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BOTH = ["linux/amd64", "linux/arm64"]


def ci(project: Path, *args: str, env: dict[str, str] | None = None,
       timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in the project folder, as a user would."""
    return subprocess.run([sys.executable, "-m", "ci", *args], cwd=project, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def as_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(
            f"no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
    return data


def by_platform(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["platform"]: r for r in report["results"]}


def repo() -> str:
    return f"e2e/app-{secrets.token_hex(3)}"


def uname(ref: str, platform: str) -> str:
    out = subprocess.run(["docker", "run", "--rm", "--pull", "always", "--platform", platform,
                          ref, "uname", "-m"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def layers(registry: Registry, name: str, digest: str) -> list[str]:
    manifest = RegistryClient(registry.host).get_manifest(name, digest)
    return [layer["digest"] for layer in manifest.data["layers"]]


@pytest.fixture
def project(tmp_path: Path, docker_stack: None) -> Iterator[Path]:
    folder = tmp_path / "app"
    yield folder
    toml = folder / "ci.toml"
    if toml.exists():
        image = cfg.loads(toml.read_text()).project.image
        remove_local_images(image)


def test_build_publishes_a_two_platform_index(project: Path, registry: Registry,
                                              registry_proxy: FaultProxy) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}")
    started = time.monotonic()
    proc = ci(project, "build", "--json")
    wall = time.monotonic() - started
    report = as_json(proc)
    assert proc.returncode == 0, proc.stderr
    res = by_platform(report)
    assert (res["linux/amd64"]["placement"], res["linux/arm64"]["placement"]) == (
        "native", "emulated")
    assert res["linux/arm64"]["emulated_seconds"] > 0 and res["linux/amd64"]["seconds"] > 0
    pub = report["publish"]
    short = head_sha(project)[:7]
    assert pub["tags"] == [f"sha-{short}", "main", "latest"]
    assert registry.tags(name) == sorted(pub["tags"])
    assert pub["platforms"] == BOTH
    assert verify_index(RegistryClient(registry.host), name, "latest", BOTH) == BOTH
    [index] = registry.indexes(name)
    assert index["digest"] == pub["digest"]
    assert index["annotations"]["org.opencontainers.image.revision"] == head_sha(project)
    assert "unknown" not in json.dumps(index["manifests"])
    ref = f"{registry_proxy.host}/{name}:latest"
    assert uname(ref, "linux/arm64") == "aarch64"
    assert uname(ref, "linux/amd64") == "x86_64"
    print(f"\n[measure] ci build wall {wall:.1f}s; amd64 "
          f"{res['linux/amd64']['seconds']:.1f}s, arm64 {res['linux/arm64']['seconds']:.1f}s "
          f"(emulated {res['linux/arm64']['emulated_seconds']:.1f}s); publish "
          f"{pub['seconds']:.2f}s")


def test_test_failing_only_on_arm64_publishes_nothing(project: Path, registry: Registry,
                                                      registry_proxy: FaultProxy) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}",
                 test_env={"SAMPLE_FAIL_ON_ARM64": "1"})
    proc = ci(project, "build", "--json")
    assert proc.returncode == 1
    report = as_json(proc)
    assert report["ok"] is False and report["publish"] is None
    res = by_platform(report)
    assert res["linux/amd64"]["status"] == "passed" and res["linux/amd64"]["digest"]
    assert res["linux/arm64"]["status"] == "failed" and res["linux/arm64"]["digest"] is None
    assert "linux/arm64: tests failed on linux/arm64" in proc.stderr
    assert "nothing published" in proc.stderr
    assert "linux/amd64:" not in proc.stderr
    # nothing user-visible: no tag, no index; amd64 exists only by digest
    assert registry.tags(name) == []
    assert registry.indexes(name) == []
    assert [m["digest"] for m in registry.manifests(name)] == [res["linux/amd64"]["digest"]]


def test_failed_tag_write_moves_nothing_and_rerun_reuses_cache(
    project: Path, registry: Registry, fault_proxy: FaultProxy,
) -> None:
    name = repo()
    make_project(project, f"{fault_proxy.host}/{name}")
    fault_proxy.fail("PUT", TAG_PUT)
    first = ci(project, "build", "--json")
    assert first.returncode == 1
    failed = as_json(first)
    assert "no tag moved" in failed["error"] and "HTTP 503" in failed["error"]
    assert "no tag moved" in first.stderr
    assert registry.tags(name) == []
    fault_proxy.reset()
    started = time.monotonic()
    second = ci(project, "build", "--json")
    rerun = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    ok = as_json(second)
    assert registry.tags(name) == sorted(ok["publish"]["tags"])
    before, after = by_platform(failed), by_platform(ok)
    for platform in BOTH:
        # nothing per run in the image (no run id label, `created` = the commit's time): the
        # rerun of one commit from the cache pushes the very same image
        assert before[platform]["digest"] == after[platform]["digest"]
        assert layers(registry, name, before[platform]["digest"]) == layers(
            registry, name, after[platform]["digest"])
    runs = sorted((project / ".maci/runs").iterdir(), key=lambda p: p.stat().st_mtime)
    log = (runs[-1] / "linux-arm64" / "build-release.log").read_text()
    assert "RUN python3 -c" in log and "CACHED" in log
    arm = after["linux/arm64"]["durations"]
    print(f"\n[measure] warm rerun wall {rerun:.1f}s; arm64 build_test {arm['build_test']:.1f}s "
          f"build_release {arm['build_release']:.1f}s test {arm['test']:.1f}s push "
          f"{arm['push']:.1f}s")


def test_second_daemon_runs_its_platform(project: Path, registry: Registry,
                                         registry_proxy: FaultProxy,
                                         second_dockerd: Dockerd) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}", runners=[
        {"name": "box2", "host": second_dockerd.host, "platform": "linux/amd64", "capacity": 1},
        {"name": "local", "host": "", "capacity": 1},
    ])
    proc = ci(project, "build")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    table = proc.stdout
    assert "box2" in table and "native" in table and "emulated" in table
    status, body = registry.get(f"/v2/{name}/manifests/latest",
                                "application/vnd.oci.image.index.v1+json")
    assert status == 200
    amd = next(m for m in json.loads(body)["manifests"]
               if m["platform"]["architecture"] == "amd64")
    manifest = RegistryClient(registry.host).get_manifest(name, amd["digest"])
    image_id = manifest.data["config"]["digest"]
    # built THERE: the image is in the second daemon's store and not in the local one
    assert second_dockerd.docker("image", "inspect", image_id).returncode == 0
    local = subprocess.run(["docker", "image", "inspect", image_id], capture_output=True)
    assert local.returncode != 0
    assert "linux/arm64" in table and "qemu on 'local'" in table


def test_matrix_legs_then_merge(project: Path, registry: Registry,
                                registry_proxy: FaultProxy) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}")
    env = {"MACI_RUN_ID": f"matrix-{secrets.token_hex(2)}"}
    legs = {}
    for platform, out in (("linux/amd64", "r-amd64.json"), ("linux/arm64", "r-arm64.json")):
        started = time.monotonic()
        leg = ci(project, "job", "--platform", platform, "--output", out, env=env)
        legs[platform] = time.monotonic() - started
        assert leg.returncode == 0, leg.stderr
        assert "result written to" in leg.stdout
    assert registry.tags(name) == []  # legs push by digest only
    amd = json.loads((project / "r-amd64.json").read_text())
    assert amd["platform"] == "linux/amd64" and amd["run_id"] == env["MACI_RUN_ID"]

    # refusals touch nothing
    incomplete = ci(project, "merge", "r-amd64.json")
    assert incomplete.returncode == 1 and "linux/arm64: no result" in incomplete.stderr
    other = json.loads((project / "r-arm64.json").read_text())
    other["source"]["sha"] = "0" * 40
    (project / "r-other.json").write_text(json.dumps(other))
    mixed = ci(project, "merge", "r-amd64.json", "r-other.json")
    assert mixed.returncode == 1 and "results do not belong to one release" in mixed.stderr
    assert "mixed source commits" in mixed.stderr
    twice = ci(project, "merge", "r-amd64.json", "r-amd64.json")
    assert twice.returncode == 1 and "duplicated platform(s): linux/amd64" in twice.stderr
    garbage = project / "r-bad.json"
    garbage.write_text("{}")
    bad = ci(project, "merge", "r-amd64.json", str(garbage))
    assert bad.returncode == 2 and "not a platform result" in bad.stderr
    assert registry.tags(name) == [] and registry.indexes(name) == []

    started = time.monotonic()
    merged = ci(project, "merge", "r-amd64.json", "r-arm64.json", "--json")
    merge_wall = time.monotonic() - started
    assert merged.returncode == 0, merged.stderr
    pub = as_json(merged)["publish"]
    assert pub["platforms"] == BOTH
    assert registry.tags(name) == sorted(pub["tags"])
    # the run is named by the results and the verdict, never in the index (same release, same
    # index digest)
    assert "dev.maci.run-id" not in pub["annotations"]
    assert pub["annotations"]["org.opencontainers.image.revision"] == head_sha(project)
    print(f"\n[measure] ci job amd64 {legs['linux/amd64']:.1f}s, arm64 "
          f"{legs['linux/arm64']:.1f}s; ci merge wall {merge_wall:.2f}s "
          f"(publish {pub['seconds']:.2f}s)")


def test_failed_leg_is_named_by_merge(project: Path, registry: Registry,
                                      registry_proxy: FaultProxy) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}", platforms=("linux/arm64",),
                 test_env={"SAMPLE_FAIL_ON_ARM64": "1"})
    leg = ci(project, "job", "--platform", "linux/arm64", "--output", "r.json")
    assert leg.returncode == 1
    merged = ci(project, "merge", "r.json")
    assert merged.returncode == 1
    assert "nothing published: linux/arm64: tests failed on linux/arm64" in merged.stderr
    assert registry.tags(name) == [] and registry.manifests(name) == []


def test_ctrl_c_cancels_everything_and_publishes_nothing(project: Path, registry: Registry,
                                                         registry_proxy: FaultProxy) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}")
    proc = subprocess.Popen([sys.executable, "-m", "ci", "build"], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    runs = project / ".maci" / "runs"
    deadline = time.monotonic() + 60
    # wait until the emulated tests are running, then press Ctrl-C (SIGINT to the group)
    while time.monotonic() < deadline and not list(runs.glob("*/linux-arm64/test.iid")):
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    started = time.monotonic()
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert time.monotonic() - started < 30
    assert registry.tags(name) == [] and registry.indexes(name) == []
    run_id = next(runs.iterdir()).name
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=maci-{run_id}"],
                          capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_a_subset_of_platforms_builds_but_never_publishes(project: Path, registry: Registry,
                                                          registry_proxy: FaultProxy) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}")
    refused = ci(project, "build", "--platform", "linux/amd64")
    assert refused.returncode == 2
    assert "leaves out linux/arm64" in refused.stderr and "--no-publish" in refused.stderr
    assert not (project / ".maci").exists()  # refused before any work
    built = ci(project, "build", "--platform", "linux/amd64", "--no-publish", "--json")
    assert built.returncode == 0, built.stderr
    [res] = as_json(built)["results"]
    assert res["status"] == "passed" and res["digest"] is None and "push" not in res["durations"]
    assert registry.manifests(name) == []
