"""`ci doctor` and `ci setup-qemu` against the real machine (dockerd, buildx, binfmt)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ci.adapters import binfmt
from tests.fixtures.procs import require, require_tool

pytestmark = pytest.mark.integration

CONFIG = """
[project]
name = "svc"
image = "127.0.0.1:{port}/svc"
platforms = ["linux/amd64", "linux/arm64"]
[mlflow]
tracking_uri = "http://127.0.0.1:{port}"
"""


def ci(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ci", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120, check=False)


@pytest.fixture
def docker_up() -> None:
    require_tool("docker")
    up = subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    require(up, "docker daemon is not running (scripts/setup-stack.sh starts it)")


def test_setup_qemu_is_idempotent_and_sets_flag_f(docker_up: None) -> None:
    require(os.geteuid() == 0, "needs root")
    require(Path("/usr/bin/qemu-aarch64-static").exists(), "qemu-user-static not installed")
    first = ci("setup-qemu", "--platform", "linux/arm64")
    assert first.returncode == 0, first.stderr
    second = ci("setup-qemu", "--platform", "linux/arm64")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == (
        "linux/arm64: unchanged (/usr/bin/qemu-aarch64-static, flags OCF)")
    handler = {h.name: h for h in binfmt.handlers()}["qemu-aarch64"]
    assert handler.fix_binary and handler.enabled
    assert handler.platform is not None and str(handler.platform) == "linux/arm64"


def test_setup_qemu_refuses_non_root_and_changes_nothing() -> None:
    require(os.geteuid() == 0, "needs root to drop privileges")
    setpriv = require_tool("setpriv")
    before = [h.as_dict() for h in binfmt.handlers()]
    cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
           sys.executable, "-m", "ci", "setup-qemu", "--platform", "linux/arm64"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         cwd=Path(__file__).parents[2], timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: ci setup-qemu must run as root (it writes to binfmt_misc)"]
    assert [h.as_dict() for h in binfmt.handlers()] == before


def test_setup_qemu_names_missing_qemu(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="qemu-user-static"):
        binfmt.setup([binfmt.platforms.parse("linux/riscv64")], bindir=tmp_path)


def test_doctor_json_reports_daemon_buildx_binfmt_and_services(
    docker_up: None, tmp_path: Path
) -> None:
    closed = 9  # discard port: nothing answers there
    (tmp_path / "ci.toml").write_text(CONFIG.format(port=closed))
    out = ci("doctor", "--json", cwd=tmp_path)
    report = json.loads(out.stdout)
    runner = report["runners"][0]
    assert runner["reachable"] is True
    assert runner["native"] == "linux/amd64" or runner["native"] == "linux/arm64"
    assert report["buildx"]["ok"] is True
    assert any(h["name"] == "qemu-aarch64" and "F" in h["flags"] for h in report["binfmt"]) or \
        runner["native"] == "linux/arm64"
    assert report["registry"]["ok"] is False and report["mlflow"]["ok"] is False
    assert out.returncode == 1  # services down → doctor says so


def test_doctor_table_without_config(docker_up: None, tmp_path: Path) -> None:
    out = ci("doctor", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "runner local" in out.stdout and "docker buildx" in out.stdout


def test_plan_on_real_daemon_places_amd64_native_arm64_emulated(docker_up: None,
                                                                tmp_path: Path) -> None:
    require(binfmt.platforms.host().architecture == "amd64", "needs an amd64 host")
    (tmp_path / "ci.toml").write_text(CONFIG.format(port=5000))
    out = ci("plan", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    kinds = {j["platform"]: j["placement"]["kind"] for j in json.loads(out.stdout)["jobs"]}
    assert kinds == {"linux/amd64": "native", "linux/arm64": "emulated"}
    fail = ci("plan", "--json", cwd=tmp_path,
              env={**os.environ, "MACI_EMULATION__FALLBACK": "fail"})
    assert fail.returncode == 1
    kinds = {j["platform"]: j["placement"]["kind"] for j in json.loads(fail.stdout)["jobs"]}
    assert kinds == {"linux/amd64": "native", "linux/arm64": "unavailable"}


def test_plan_unreachable_docker_runner(docker_up: None, tmp_path: Path) -> None:
    body = CONFIG.format(port=5000) + (
        '[[runners]]\nname = "arm"\nhost = "tcp://127.0.0.1:9"\nplatform = "linux/arm64"\n'
        '[[runners]]\nname = "local"\n')
    (tmp_path / "ci.toml").write_text(body)
    out = ci("plan", "--json", cwd=tmp_path)
    jobs = {j["platform"]: j["placement"] for j in json.loads(out.stdout)["jobs"]}
    assert jobs["linux/arm64"]["runner"] == "local"
    assert "runner 'arm' unreachable" in jobs["linux/arm64"]["reason"]
