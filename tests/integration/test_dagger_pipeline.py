"""`dagger run python -m pipelines.release` through the session environment, end to end.

`pipelines/release.py` is the PROJECT's own file (the README's three lines reusing the
built-in release), run as a module from the project directory, as `dagger run` does.

The real dagger-io SDK talks to the schema-validating fake engine (the one stand-in); the
per-platform digests it "publishes" are real images pre-pushed to the real registry, so the
registry merge, tags and verdict are the real ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.dagger_fake import DaggerFake, clean_environ, write_tiny_service
from tests.fixtures.registry import Registry, push_tiny_image

pytestmark = [pytest.mark.integration, pytest.mark.dagger_fake]

# What the README tells a project to write to run its release as `python -m pipelines.release`.
PROJECT_PIPELINE = """\
from ci import main
from ci import release_pipeline as pipeline

if __name__ == "__main__":
    raise SystemExit(main(pipeline))
"""
GIT = ["git", "-c", "user.name=maci test", "-c", "user.email=test@maci.invalid"]


def make_service(root: Path, image: str) -> Path:
    write_tiny_service(root)
    (root / "pipelines").mkdir()
    (root / "pipelines" / "release.py").write_text(PROJECT_PIPELINE)
    (root / "ci.toml").write_text(f"""
[project]
name = "svc"
image = "{image}"
platforms = ["linux/amd64", "linux/arm64"]

[build]
target = "runtime"
base_image = "maci/python:bookworm-{{arch}}"

[test]
target = "test"
command = ["python3", "-m", "pytest", "-q", "--junitxml=/tmp/maci-junit.xml"]

[publish]
tags = ["sha-{{short_sha}}", "{{branch}}"]
""")
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-q", "-m", "svc"], check=True)
    return root


def test_dagger_run_pipelines_release_uses_the_session_and_publishes_both_digests(
    dagger_fake: DaggerFake, registry: Registry, tmp_path: Path
) -> None:
    repo = "dagger/svc"
    image = f"{registry.host}/{repo}"
    amd64 = push_tiny_image(registry.url, repo, "linux/amd64")
    arm64 = push_tiny_image(registry.url, repo, "linux/arm64")
    dagger_fake.engine.publish_digests = {"linux-amd64": amd64, "linux-arm64": arm64}
    project = make_service(tmp_path / "svc", image)
    env = {**clean_environ(), **dagger_fake.session_env(), "PATH": "/usr/bin:/bin"}
    env = {k: v for k, v in env.items() if not k.startswith(("MACI_", "GITHUB_", "GITLAB_"))}
    proc = subprocess.run([sys.executable, "-m", "pipelines.release", "--json"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    platforms = {p["platform"]: p for p in out["verdict"]["platforms"]}
    assert {p: r["engine"] for p, r in platforms.items()} == {
        "linux/amd64": "dagger", "linux/arm64": "dagger"}
    assert platforms["linux/arm64"]["placement"] == "emulated"  # no arm64 engine configured
    assert platforms["linux/amd64"]["digest"] == amd64
    assert platforms["linux/arm64"]["digest"] == arm64
    # the session from the environment did the work: both platforms were asked of the fake
    asked = {c["platform"] for name in ("container", "dockerBuild")
             for c in dagger_fake.calls(name) if c.get("platform")}
    assert asked == {"LINUX_AMD64", "LINUX_ARM64"} or asked == {"linux/amd64", "linux/arm64"}
    # the real registry merge assembled an index of exactly those two digests and tagged it
    published = out["published"]
    assert sorted(published["manifests"].values()) == sorted([amd64, arm64])
    index = registry.indexes(repo)
    assert len(index) == 1
    assert sorted(m["digest"] for m in index[0]["manifests"]) == sorted([amd64, arm64])
    assert sorted(registry.tags(repo)) == sorted(published["tags"])
    assert {"main", "latest"} <= set(published["tags"])


def test_ci_run_engine_dagger_without_an_engine_exits_1_fast(tmp_path: Path) -> None:
    project = make_service(tmp_path / "svc", "127.0.0.1:9/none/svc")
    env = {k: v for k, v in clean_environ().items() if not k.startswith("MACI_")}
    env["PATH"] = "/usr/bin:/bin"  # no dagger CLI
    proc = subprocess.run([sys.executable, "-m", "ci", "run", "--engine", "dagger"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "dagger" in lines[0].lower(), proc.stderr

