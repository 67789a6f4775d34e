"""`ci init` for real (`python -m ci init` in temporary git repositories): the file it writes
loads, `ci plan` reads it (exit 0 or 1 — placements depend on this machine — never 2), the
image comes from the git remote, and a second run refuses and leaves the file untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ci.core import config as cfg
from tests.fixtures.procs import require_tool

pytestmark = pytest.mark.integration

CONTAINERFILE = """\
ARG BASE=python:3.12-slim
FROM ${BASE} AS base
WORKDIR /srv
FROM base AS test
COPY . .
FROM base AS prod
COPY app/ app/
CMD ["python3", "-m", "app"]
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MACI_", "GIT_"))}
    return {**env, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def ci(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ci", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=120)


def git_repo(root: Path, files: dict[str, str], remote: str | None) -> Path:
    require_tool("git")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=_env())
    if remote:
        subprocess.run(["git", "-C", str(root), "remote", "add", "origin", remote], check=True,
                       env=_env())
    return root


def plan_reads(config: Path, cwd: Path) -> dict[str, object]:
    res = ci("plan", "--config", str(config), "--json", cwd=cwd)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


def refuses_again(root: Path, config: Path) -> None:
    before = config.read_bytes()
    res = ci("init", cwd=root)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == ""
    assert res.stderr.splitlines() == [f"error: {config} already exists (--force writes a new "
                                       "ci.toml)"]
    assert config.read_bytes() == before


def test_containerfile_stages_training_and_github_remote(tmp_path: Path) -> None:
    root = git_repo(tmp_path / "svc", {
        "Containerfile": CONTAINERFILE, "training/train.py": "print('train')\n",
        "tests/test_app.py": "def test_ok():\n    pass\n", "app/__main__.py": "",
        "pyproject.toml": '[project]\nname = "svc"\nversion = "0"\n',
    }, "git@github.com:acme/svc.git")
    res = ci("init", cwd=root)
    assert res.returncode == 0, res.stderr
    config = root / "ci.toml"
    conf = cfg.load(config, {}, root)
    assert conf.project.image == "ghcr.io/acme/svc"
    assert (conf.build.dockerfile, conf.build.target, conf.test.target) == ("Containerfile", "prod",
                                                                            "test")
    assert conf.test.command[:3] == ["python3", "-m", "pytest"] and "tests" in conf.test.command
    assert conf.model is not None and conf.model.train_command == ["python", "training/train.py"]
    assert conf.model.registered_model == "svc-model" and conf.model.inputs == ["training/train.py"]
    out = res.stdout
    assert "image       ghcr.io/acme/svc (from git remote origin git@github.com:acme/svc.git)" in out
    assert "stages base, test, prod" in out and "training/train.py" in out
    steps = out.split("next steps:\n", 1)[1].splitlines()
    assert [s.split(". ", 1)[1].split("  #")[0] for s in steps[-3:]] == [
        "ci doctor", "ci plan", "ci run --dry-run"]
    assert not any("placeholder" in s for s in steps)
    plan = plan_reads(config, root)
    assert plan["project"] == "svc" and plan["image"] == "ghcr.io/acme/svc"
    refuses_again(root, config)


def test_single_stage_dockerfile_without_training_or_remote(tmp_path: Path) -> None:
    root = git_repo(tmp_path / "plain", {
        "Dockerfile": "FROM python:3.12-slim\nCOPY . /app\nCMD [\"python\", \"/app/main.py\"]\n",
        "main.py": "print('hi')\n",
    }, None)
    res = ci("init", "--platform", "linux/amd64", cwd=root)
    assert res.returncode == 0, res.stderr
    config = root / "ci.toml"
    conf = cfg.load(config, {}, root)
    assert conf.project.name == "plain" and conf.project.platforms == ["linux/amd64"]
    assert conf.project.image == "registry.example.com/change-me/plain"
    assert conf.build.target is None and conf.test.target == ""
    assert conf.model is None and conf.deploy is None
    assert "1. edit project.image in ci.toml" in res.stdout
    plan_reads(config, root)
    refuses_again(root, config)


def test_gitlab_remote_with_credentials_and_kustomize_manifests(tmp_path: Path) -> None:
    root = git_repo(tmp_path / "gl", {
        "Dockerfile": CONTAINERFILE.replace("AS prod", "AS runtime"),
        "k8s/kustomization.yaml": "resources: [deployment.yaml]\n",
        "k8s/deployment.yaml": "kind: Deployment\n",
    }, "https://ci:glpat-secret@gitlab.com/group/sub/proj.git")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    res = ci("init", "--dir", str(root), "--json", cwd=outside)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert "glpat-secret" not in res.stdout
    config = root / "ci.toml"
    assert data["written"] and data["path"] == str(config)
    assert data["config"] == config.read_text()
    conf = cfg.load(config, {}, root)
    assert conf.project.image == "registry.gitlab.com/group/sub/proj"
    assert conf.build.target == "runtime" and conf.deploy is None
    assert '# manifests = ["k8s/kustomization.yaml", "k8s/deployment.yaml"]' in data["config"]
    assert any(f"-c {config}" in s for s in data["next_steps"])
    assert not list(outside.iterdir())
    plan_reads(config, outside)
