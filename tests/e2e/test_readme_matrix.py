"""The README's "same matrix locally" block, run as written (bash) in a copy of examples/wine:
train + gate, two concurrent legs embedding the gated version, then the merge that publishes."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import INDEX_TYPES, Registry

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CI_VARS = ("GITHUB_ACTIONS", "GITLAB_CI", "CI_COMMIT_SHA", "CI_PIPELINE_ID", "MACI_RUN_ID")


def readme_block(marker: str) -> str:
    """The first fenced block after `marker` in the README."""
    text = (ROOT / "README.md").read_text()
    m = re.search(re.escape(marker) + r".*?```\w*\n(.*?)```", text, re.S)
    assert m, f"README has no code block after {marker!r}"
    return m.group(1)


def test_the_readme_local_matrix_releases_as_written(docker_stack: None, registry: Registry,
                                                     tmp_path: Path) -> None:
    block = readme_block("**The same matrix locally**")
    assert "ci merge --model-result gate.json" in block
    project = tmp_path / "wine"
    shutil.copytree(ROOT / "examples" / "wine", project,
                    ignore=shutil.ignore_patterns(".maci", "model", "__pycache__"))
    repo = f"e2e/readme-matrix-{secrets.token_hex(3)}"
    toml = project / "ci.toml"
    toml.write_text(toml.read_text().replace("127.0.0.1:5000/examples/wine", f"{registry.host}/{repo}"))
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "wine"]):
        subprocess.run(["git", "-C", str(project), *cmd], check=True)
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["MACI_RUN_ID"] = f"readme-{secrets.token_hex(3)}"
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=project, env=env,
                         capture_output=True, text=True, timeout=1500, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    gate = json.loads((project / "gate.json").read_text())
    for slug in ("linux-amd64", "linux-arm64"):
        leg = json.loads((project / f"result-{slug}.json").read_text())
        assert leg["status"] == "passed" and leg["smoke"]["passed"], leg
    status, body = registry.get(f"/v2/{repo}/manifests/main", ", ".join(INDEX_TYPES))
    assert status == 200, body
    archs = sorted(m["platform"]["architecture"] for m in json.loads(body)["manifests"]
                   if m.get("platform", {}).get("os") == "linux")
    assert archs == ["amd64", "arm64"] and gate["ok"] and gate["version"]
