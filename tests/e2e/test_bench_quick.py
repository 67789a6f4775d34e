"""The benchmark harness's quick mode end to end, so it cannot rot: every figure of
BENCHMARKS.md comes out of one run (timings are NOT asserted: this machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.figures import figures, missing
from bench.perf_figures import figures as perf_figures
from bench.perf_figures import missing as perf_missing
from tests.fixtures.procs import require, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ["## Machine", "## Issue 18 goals: `ci` vs the same commands by hand",
            "## Issue 18 details per example", "### wine: 2 platforms",
            "### Where a warm `ci build` spends its time outside the jobs",
            "## Results at a glance", "## 1. Orchestration overhead",
            "## 2. Warm no-op rerun", "## 3. Native vs emulated", "## 4. Fan-out",
            "## 5. CLI startup", "## 6. Model stage", "## 7. Index merge",
            "## Gaps and what would close them"]


def _has_image(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


@pytest.mark.timeout(1300)
def test_quick_mode_produces_every_figure(tmp_path: Path) -> None:
    for tool in ("docker", "dockerd", "docker-registry", "git", "curl", "ip"):
        require_tool(tool)
    require(os.geteuid() == 0, "the fan-out figure starts a second dockerd (needs root)")
    require(Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_file(), "qemu binfmt for arm64")
    for arch in ("amd64", "arm64"):
        require(_has_image(f"maci/python:bookworm-{arch}"), "base images (scripts/setup-stack.sh)")
    out, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"

    res = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--markdown",
         str(markdown)], cwd=REPO, capture_output=True, text=True, timeout=1250,
    )

    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    data = json.loads(out.read_text())
    figs = figures(data)
    assert missing(figs) == []
    rel = data["release"]
    assert [s["up_to_date"] for s in rel["warm"]] == [True]  # the no-op rerun did no work
    assert all(not s["up_to_date"] for s in rel["cold"] + rel["forced"])
    assert rel["hand"] and all(s["phases"] for s in rel["hand"])
    assert figs["merge"]["blob_upload_bytes"]["max"] == 0  # the index merge moves no layers
    fan = data["fanout"]
    assert {j["runner"] for s in fan["two_runners"] for j in s["platforms"].values()} == {
        "local", "d2"}
    perf = data["perf"]["wine"]  # issue 18: `ci build` / `ci run` against the same commands by hand
    assert perf_missing(perf_figures(data)) == []
    for key in ("ci_new", "hand_new", "ci_warm", "hand_warm"):
        assert perf["builds"][key] and all(s["jobs"] for s in perf["builds"][key])
    assert set(perf["builds"]["hand_new"][0]["jobs"]) == {"linux/amd64", "linux/arm64"}
    assert perf["run_build"][0]["run"]["model"]["reused"] is False  # the commit really trained
    assert perf["anatomy"] and perf["anatomy"][0]["imports"] > 0
    assert perf["imports"][0]["total"] > 0
    text = markdown.read_text()
    for heading in SECTIONS:
        assert heading in text
    assert "Missing figures" not in text
    assert "not measured" not in text.split("## Supply chain")[0]  # (its own run, re-rendered)
    # nothing of the bench is left behind: its work folder and its image tags are gone
    assert not Path(data["tmp"]).exists()
    listed = subprocess.run(["docker", "images", "--format", "{{.Repository}}"],
                            capture_output=True, text=True).stdout.split()
    assert not [r for r in listed if r.startswith(f"{data['registry']}/")]
