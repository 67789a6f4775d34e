"""zizmor (GitHub Actions security audits, PyPI wheel, `--offline`) on the project's own .github/:
clean, with every remaining finding ignored inline with a reason, and shown able to fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.procs import require
from tests.fixtures.workflows import ROOT, offline_env, run, tool

pytestmark = pytest.mark.integration

VERSION = "1.32.0"  # scripts/install-zizmor.sh
# The only audits the files may silence, each for a reason written on the line.
JUSTIFIED = {"unpinned-uses", "self-repository"}
IGNORE = re.compile(r"#\s*zizmor:\s*ignore\[([^\]]+)\](.*)$")

# Every way in that the audits exist for: a third-party action on a branch, an attacker-controlled
# expression templated into a script, a checkout that leaves the token in .git/config.
INJECTABLE = """\
name: triage
on:
  issues:
    types: [opened]
permissions:
  contents: read
jobs:
  triage:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v5
      - uses: some-one/labeler@main
      - run: echo "${{ github.event.issue.title }}"
"""


@pytest.fixture(scope="module")
def zizmor() -> str:
    exe = tool("zizmor")
    require(exe is not None, "zizmor is not installed (bash scripts/install-zizmor.sh)")
    assert exe is not None
    return exe


def audit(exe: str, folder: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    # No token in the environment and proxies on a closed port: offline means offline.
    env = {k: v for k, v in offline_env().items() if k not in {"GH_TOKEN", "GITHUB_TOKEN"}}
    return run([exe, "--offline", "--no-progress", "--color", "never", *flags, ".github/"],
               env=env, cwd=folder)


def findings(res: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    data = json.loads(res.stdout)
    assert isinstance(data, list), res.stdout
    return data


def test_zizmor_is_the_pinned_release(zizmor: str) -> None:
    assert run([zizmor, "--version"]).stdout.strip() == f"zizmor {VERSION}"


def test_the_github_files_pass_zizmor(zizmor: str) -> None:
    res = audit(zizmor, ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No findings to report" in res.stdout + res.stderr


def test_every_ignored_finding_is_a_justified_kind_with_a_reason(zizmor: str) -> None:
    res = audit(zizmor, ROOT, "--no-ignores", "--format", "json")
    found = findings(res)
    assert found, "nothing to ignore: drop the ignore comments"
    assert {f["ident"] for f in found} <= JUSTIFIED, sorted({f["ident"] for f in found})
    comments = [(path, m) for path in sorted((ROOT / ".github").rglob("*.y*ml"))
                for line in path.read_text().splitlines() if (m := IGNORE.search(line))]
    assert comments
    for path, m in comments:
        assert set(m.group(1).split(",")) <= JUSTIFIED, (path, m.group(0))
        assert len(m.group(2).strip()) >= 10, f"{path}: `{m.group(0)}` gives no reason"


def test_zizmor_fails_on_an_unpinned_injectable_workflow(zizmor: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / ".github", tmp_path / ".github")
    clean = audit(zizmor, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr  # the copy alone passes
    (tmp_path / ".github" / "workflows" / "triage.yml").write_text(INJECTABLE)
    res = audit(zizmor, tmp_path, "--format", "json")
    assert res.returncode != 0, res.stdout + res.stderr
    kinds = {f["ident"] for f in findings(res) if not f.get("ignored")}
    assert {"template-injection", "unpinned-uses", "artipacked"} <= kinds, kinds
    # An ignore comment without the `# zizmor:` form silences nothing.
    release = tmp_path / ".github" / "workflows" / "release.yml"
    release.write_text(release.read_text().replace("# zizmor: ignore[unpinned-uses]", "# ignore"))
    (tmp_path / ".github" / "workflows" / "triage.yml").unlink()
    res = audit(zizmor, tmp_path, "--format", "json")
    assert res.returncode != 0
    assert {f["ident"] for f in findings(res) if not f.get("ignored")} == {"unpinned-uses"}
