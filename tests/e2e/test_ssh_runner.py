"""A REAL remote Docker runner over ssh:// (issue #14 item 6), end to end.

The runner is `ssh://root@10.213.K.2`: sshd and a second dockerd in a network namespace
(tests/fixtures/ssh_runner.py, scripts/netns-runner.sh), reached through the system `ssh`
binary like any remote host; its 127.0.0.1:PORT is forwarded to this host's registry proxy so
image refs are the same on both sides. Checked: a release whose amd64 job runs THERE (its
image is in that daemon's store, not in the local one), a runner cut off mid-job (a clear
failure, exit 1, nothing published, in bounded time), and a runner cut off before the job
(qemu fallback on the local daemon, or a plan that refuses with `fallback = "fail"`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.adapters.registry import RegistryClient
from ci.core import config as cfg
from ci.stages.fanout import execute
from ci.stages.prepare import prepare
from tests.e2e.test_build_publish import as_json, by_platform
from tests.fixtures.registry import FaultProxy, Registry
from tests.fixtures.sampleapp import make_project, remove_local_images
from tests.fixtures.ssh_runner import SshRunner

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BOTH = ["linux/amd64", "linux/arm64"]
# the kernel's ssh keepalives (ServerAliveInterval 2 x 3) end a dead connection in ~6 s
DETECT_BOUND = 45.0


def ci(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ci", *args], cwd=project, text=True,
                          capture_output=True, timeout=timeout, env=dict(os.environ))


def repo() -> str:
    return f"e2e/ssh-{secrets.token_hex(3)}"


def runners(remote: SshRunner, platform: str | None = None) -> list[dict[str, Any]]:
    ssh: dict[str, Any] = {"name": "remote", "host": remote.docker_host, "capacity": 1}
    if platform:
        ssh["platform"] = platform
    return [ssh, {"name": "local", "host": "", "capacity": 1}]


def config_image(folder: Path) -> str:
    return cfg.loads((folder / "ci.toml").read_text()).project.image


def commit(project: Path, message: str) -> None:
    git = ["git", "-c", "user.name=maci test", "-c", "user.email=test@maci.invalid", "-C",
           str(project)]
    subprocess.run([*git, "commit", "-qam", message], check=True)


def slow_test_stage(project: Path, marker: str) -> None:
    """A `RUN sleep MARKER` in the test stage: the job is mid-build on its runner while it
    runs, and the process is found by its exact command line."""
    dockerfile = project / "Dockerfile"
    text = dockerfile.read_text()
    assert "FROM base AS test\n" in text
    dockerfile.write_text(text.replace("FROM base AS test\n",
                                       f"FROM base AS test\nRUN sleep {marker}\n"))
    commit(project, "slow test stage")


def find_process(argv: list[str]) -> int | None:
    want = "\0".join(argv).encode() + b"\0"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == want:
                    return int(entry.name)
            except OSError:
                continue
    return None


def ancestors(pid: int) -> list[int]:
    out: list[int] = []
    while pid > 1:
        try:
            status = (Path("/proc") / str(pid) / "status").read_text()
        except OSError:
            break
        pid = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")))
        out.append(pid)
    return out


@pytest.fixture
def remote(ssh_link: SshRunner, registry_proxy: FaultProxy) -> SshRunner:
    """The ssh runner, its 127.0.0.1:<proxy port> forwarded to the session's registry proxy."""
    ssh_link.forward(registry_proxy.port)
    return ssh_link


@pytest.fixture
def project(tmp_path: Path, docker_stack: None, ssh_runner: SshRunner) -> Iterator[Path]:
    folder = tmp_path / "app"
    yield folder
    if (folder / "ci.toml").exists():
        image = config_image(folder)
        remove_local_images(image)
        remove_local_images(image, host=ssh_runner.socket)


def test_release_builds_its_amd64_job_on_the_ssh_runner(
    project: Path, tmp_path: Path, registry: Registry, registry_proxy: FaultProxy,
    remote: SshRunner,
) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}",
                 runners=runners(remote, "linux/amd64"))
    started = time.monotonic()
    proc = ci(project, "build", "--json")
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report = as_json(proc)
    res = by_platform(report)
    amd, arm = res["linux/amd64"], res["linux/arm64"]
    assert (amd["runner"], amd["placement"]) == ("remote", "native")
    assert (arm["runner"], arm["placement"]) == ("local", "emulated")
    pub = report["publish"]
    assert pub["platforms"] == BOTH
    assert registry.tags(name) == sorted(pub["tags"])
    [index] = registry.indexes(name)
    assert index["digest"] == pub["digest"]
    listed = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert listed["amd64"] == amd["digest"]
    status, _ = registry.get(f"/v2/{name}/manifests/{amd['digest']}",
                             "application/vnd.oci.image.manifest.v1+json,"
                             "application/vnd.docker.distribution.manifest.v2+json")
    assert status == 200
    # built THERE: the pushed config is an image of the ssh runner's daemon, not of this one's
    image_id = RegistryClient(registry.host).get_manifest(name, amd["digest"]).data[
        "config"]["digest"]
    assert remote.docker("image", "inspect", image_id).returncode == 0
    assert remote.docker("image", "inspect", image_id, via="ssh").returncode == 0
    assert subprocess.run(["docker", "image", "inspect", image_id],
                          capture_output=True).returncode != 0
    assert remote.docker("image", "inspect", "maci-test/sampleapp:linux-amd64").returncode == 0

    # the same amd64 job again on the ssh runner (its cache now warm), then on the local daemon
    warm = ci(project, "build", "--platform", "linux/amd64", "--no-publish", "--json")
    assert warm.returncode == 0, warm.stderr
    [remote_warm] = as_json(warm)["results"]
    assert remote_warm["runner"] == "remote"
    local_project = make_project(tmp_path / "local", f"{registry_proxy.host}/{name}-local",
                                 runners=[{"name": "local", "host": "", "capacity": 1}])
    try:
        here = ci(local_project, "build", "--platform", "linux/amd64", "--no-publish", "--json")
        assert here.returncode == 0, here.stderr
        [local_job] = as_json(here)["results"]
    finally:
        remove_local_images(config_image(local_project))
    assert local_job["runner"] == "local"

    def steps(r: dict[str, Any]) -> str:
        return f"{r['seconds']:.1f}s (" + ", ".join(
            f"{k} {v:.1f}" for k, v in r["durations"].items()) + ")"

    print(f"\n[measure] ci build wall {wall:.1f}s; amd64 on ssh runner (cold) {steps(amd)}; "
          f"arm64 local qemu {arm['seconds']:.1f}s\n[measure] amd64 job: ssh runner warm "
          f"{steps(remote_warm)} vs local daemon {steps(local_job)}")


def test_runner_cut_off_mid_job_fails_clearly_and_publishes_nothing(
    project: Path, registry: Registry, registry_proxy: FaultProxy, remote: SshRunner,
) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}", platforms=("linux/amd64",),
                 runners=runners(remote, "linux/amd64")[:1])
    marker = f"{secrets.randbelow(900) + 100}.{secrets.randbelow(9) + 1}"
    slow_test_stage(project, marker)
    job = subprocess.Popen([sys.executable, "-m", "ci", "build", "--json"], cwd=project,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           start_new_session=True)
    try:
        # wait until the job's build is running on the ssh runner's daemon, then cut it off
        deadline = time.monotonic() + 120
        pid = None
        while pid is None and time.monotonic() < deadline and job.poll() is None:
            pid = find_process(["sleep", marker])
            time.sleep(0.1)
        assert pid is not None, f"the build never started on the runner: {job.poll()}"
        assert remote.dockerd_pid in ancestors(pid), "the RUN step is not the runner's"
        cut_at = remote.cut()
        out, err = job.communicate(timeout=DETECT_BOUND + 60)
        detected = time.monotonic() - cut_at
    finally:
        if job.poll() is None:
            os.killpg(job.pid, 9)
            job.wait()
    assert job.returncode == 1, err
    assert detected < DETECT_BOUND, f"cut-off noticed only after {detected:.1f}s"
    report = as_json(subprocess.CompletedProcess(job.args, job.returncode, out, err))
    assert report["publish"] is None and report["ok"] is False
    [res] = report["results"]
    assert res["runner"] == "remote" and res["digest"] is None
    failure = res["failure"]
    text = json.dumps(failure) + err
    assert remote.addr in text, text  # the host it lost
    assert failure["step"] == "build_test", failure
    assert failure["message"].startswith("build_test: lost runner 'remote' (ssh://"), failure
    assert "linux/amd64" in err and "nothing published" in err, err
    assert registry.tags(name) == [] and registry.indexes(name) == []
    assert registry.manifests(name) == []
    # the runner itself gives up the orphaned build (its ssh session is dropped, the build's
    # session with it): nothing keeps running there after the link is back
    remote.restore()
    gone = time.monotonic() + 60
    while find_process(["sleep", marker]) is not None and time.monotonic() < gone:
        time.sleep(0.2)
    assert find_process(["sleep", marker]) is None, "the cut-off build still runs on the runner"
    shown = next(ln for ln in err.splitlines() if "linux/amd64" in ln)
    print(f"\n[measure] cut-off mid-build noticed after {detected:.1f}s; status "
          f"{res['status']}; console: {shown.strip()}")


def test_runner_cut_off_before_the_plan_falls_back_to_qemu(
    project: Path, registry: Registry, registry_proxy: FaultProxy, remote: SshRunner,
) -> None:
    # The runner stands in for an arm64 box (declared linux/arm64): cut off, the engine cannot
    # say otherwise, so the declared platform is what the plan knows of it.
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}", platforms=("linux/arm64",),
                 runners=runners(remote, "linux/arm64"))
    with remote.cut_off():
        started = time.monotonic()
        plan = ci(project, "plan")
        plan_wall = time.monotonic() - started
        proc = ci(project, "build", "--json")
    assert plan.returncode == 0, plan.stderr
    assert "runner remote: unreachable" in plan.stdout, plan.stdout
    assert proc.returncode == 0, proc.stderr
    report = as_json(proc)
    [res] = report["results"]
    assert (res["runner"], res["placement"]) == ("local", "emulated")
    reason = res["placement_reason"]
    assert "no native linux/arm64 runner" in reason and "runner 'remote' unreachable" in reason
    assert remote.addr in reason and "No route to host" in reason, reason
    assert "qemu on 'local'" in reason, reason
    assert res["emulated_seconds"] > 0
    assert report["publish"]["platforms"] == ["linux/arm64"]
    assert registry.tags(name) == sorted(report["publish"]["tags"])
    print(f"\n[measure] ci plan with the runner cut off: {plan_wall:.1f}s; emulated job "
          f"{res['seconds']:.1f}s")


def test_runner_cut_off_before_the_plan_with_fallback_fail_refuses(
    project: Path, registry: Registry, registry_proxy: FaultProxy, remote: SshRunner,
) -> None:
    name = repo()
    make_project(project, f"{registry_proxy.host}/{name}", platforms=("linux/arm64",),
                 runners=runners(remote, "linux/arm64"),
                 extra='\n[emulation]\nfallback = "fail"\n')
    with remote.cut_off():
        started = time.monotonic()
        proc = ci(project, "build")
        wall = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr + proc.stdout
    line = next((ln for ln in proc.stderr.splitlines()
                 if "no native linux/arm64 runner and fallback is 'fail'" in ln), "")
    assert "runner 'remote' unreachable" in line and remote.addr in line, proc.stderr
    assert line.rstrip().endswith(f"ssh: connect to host {remote.addr} port 22: No route to host")
    assert not (project / ".maci" / "runs").exists() or not any(
        (project / ".maci" / "runs").iterdir())
    assert registry.tags(name) == [] and registry.manifests(name) == []
    print(f"\n[measure] refused in {wall:.1f}s: {line.strip()[:300]}")


@pytest.mark.parametrize("fallback", ["qemu", "fail"])
def test_runner_cut_off_after_the_plan(
    project: Path, registry_proxy: FaultProxy, remote: SshRunner, fallback: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planned on the ssh runner, cut off before its job starts: the job's first call (ping)
    finds it gone; `qemu` moves it to a runner that can run it (here natively), `fail` ends
    it as an error naming the runner."""
    make_project(project, f"{registry_proxy.host}/{repo()}", platforms=("linux/amd64",),
                 runners=runners(remote, "linux/amd64"),
                 extra=f'\n[emulation]\nfallback = "{fallback}"\n')
    monkeypatch.chdir(project)
    env = dict(os.environ)
    config = cfg.load(project / "ci.toml", env, project)
    prepared = prepare(config, environ=env)
    assert prepared.plan.job("linux/amd64").placement.runner == "remote"
    with remote.cut_off():
        started = time.monotonic()
        [res] = execute(prepared, config, push=False, environ=env)
        wall = time.monotonic() - started
    if fallback == "qemu":
        assert res.status == "passed", res.failure
        assert res.runner == "local" and res.placement == "native"
        assert "runner 'remote' unreachable at run time" in res.placement_reason
        assert "fell back to 'local' (native)" in res.placement_reason
        assert remote.addr in res.placement_reason
    else:
        assert res.status == "error" and res.runner == "remote"
        assert res.failure is not None
        assert "runner 'remote'" in res.failure.message and remote.addr in res.failure.message
    print(f"\n[measure] fallback={fallback}: job after the cut {wall:.1f}s "
          f"({res.status} on {res.runner})")
