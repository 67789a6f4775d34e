"""Isolated copies of an example (wine, bikes): own folder, git history, state, image repo.

Every benchmark sample that must do real work gets a fresh copy (or a new commit) whose
app code carries a nonce, so BuildKit cannot serve the app/test layers from cache; the base
stage (FROM + useradd) stays cached, as on any runner that built the project before.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "wine"
# example -> the deploy manifest whose placeholder image (127.0.0.1:5000/examples/<name>)
# becomes the copy's own repository
EXAMPLES = {"wine": "k8s/kustomization.yaml", "bikes": "deploy/kustomization.yaml"}
VENV_BIN = Path(sys.executable).parent
CI = str(VENV_BIN / "ci") if (VENV_BIN / "ci").exists() else "ci"
NONCE_FILE = "app/__init__.py"
BENCH_NAME = "wine-bench"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
# variables that would make `ci` read another CI system's context or another config
_DROP_PREFIXES = ("GITHUB_", "GITLAB_", "CI_", "MACI_", "DOCKER_", "MLFLOW_", "RUNNER_")
_DROP = {"CI", "GITHUB_ACTIONS", "GITLAB_CI"}


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ without CI-system, MACI_, DOCKER_ and MLFLOW_ variables, plus `extra`.

    Bytecode is read and written as usual (PYTHONDONTWRITEBYTECODE dropped): `ci` starts
    from compiled modules as an installed package does, instead of compiling every module on
    every start; the examples' .gitignore and .dockerignore keep __pycache__ out of commits
    and build contexts."""
    return {k: v for k, v in os.environ.items()
            if k not in _DROP and not k.startswith(_DROP_PREFIXES)
            and k != "PYTHONDONTWRITEBYTECODE"} | (extra or {})


def _git(cwd: Path, *args: str) -> str:
    res = subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=cwd,
                         capture_output=True, text=True, env=clean_env(GIT_ENV), timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"git {args[0]} in {cwd}: {res.stderr.strip()}")
    return res.stdout.strip()


@dataclass
class Project:
    """One copy of the example, pushing to `image` (a repository in the bench registry)."""

    root: Path
    image: str
    config: str = "ci.toml"
    # own project name: ci's test-image tags (maci-test/<name>) never collide with the user's
    env_extra: dict[str, str] = field(default_factory=lambda: {"MACI_PROJECT__NAME": BENCH_NAME})

    example: str = "wine"

    @classmethod
    def create(cls, root: Path, image: str, example: str = "wine") -> Project:
        shutil.copytree(REPO / "examples" / example, root, ignore=shutil.ignore_patterns(
            ".maci", "model", "__pycache__", "mlruns", ".pytest_cache"))
        kustomization = root / EXAMPLES[example]
        kustomization.write_text(kustomization.read_text().replace(
            f"127.0.0.1:5000/examples/{example}", image))
        project = cls(root, image, example=example,
                      env_extra={"MACI_PROJECT__NAME": f"{example}-bench"})
        _git(root, "init", "-q", "-b", "main")
        project.bump()
        return project

    def touch_outside(self) -> str:
        """A new commit that changes nothing any image holds (a file no COPY takes): new
        source sha and tree, the same layers — "nothing changed in the images"."""
        (self.root / "BENCH_NOTES.md").write_text(f"bench {secrets.token_hex(8)}\n")
        _git(self.root, "add", "-A")
        _git(self.root, "commit", "-q", "--no-verify", "-m", "bench: notes only")
        return _git(self.root, "rev-parse", "HEAD")

    def bump(self, model: bool = False) -> str:
        """A new commit whose app code differs (a nonce): new source sha, new app layers;
        `model` also changes train.py (a comment): a new model input hash, so `ci` trains."""
        for name in (NONCE_FILE, "train.py") if model else (NONCE_FILE,):
            path = self.root / name
            lines = [ln for ln in path.read_text().splitlines()
                     if not ln.startswith("# bench nonce")]
            path.write_text("\n".join([*lines, f"# bench nonce {secrets.token_hex(8)}"]) + "\n")
        _git(self.root, "add", "-A")
        _git(self.root, "commit", "-q", "--no-verify", "-m", "bench: new nonce")
        return _git(self.root, "rev-parse", "HEAD")

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return clean_env({"MACI_PROJECT__IMAGE": self.image, **self.env_extra, **(extra or {})})

    def ci_lines(self, *args: str, extra: dict[str, str] | None = None,
                 timeout: float = 900) -> tuple[Result, list[tuple[float, str]]]:
        """`ci ARGS -c CONFIG` with its stderr lines stamped (see `timed_lines`)."""
        return timed_lines([CI, *args, "-c", self.config], cwd=self.root, env=self.env(extra),
                           timeout=timeout)

    def ci(self, *args: str, extra: dict[str, str] | None = None,
           timeout: float = 900) -> Result:
        """`ci ARGS -c CONFIG` in the copy; returns wall time, exit code, stdout, stderr."""
        return timed([CI, *args, "-c", self.config], cwd=self.root, env=self.env(extra),
                     timeout=timeout)


@dataclass
class Result:
    seconds: float
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def check(self, what: str) -> Result:
        if self.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {self.returncode}):\n"
                               f"{self.stdout[-3000:]}\n{self.stderr[-3000:]}")
        return self


def timed(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
          timeout: float = 900) -> Result:
    started = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Result(round(time.perf_counter() - started, 3), res.returncode, res.stdout, res.stderr)


def timed_lines(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 900) -> tuple[Result, list[tuple[float, str]]]:
    """Like `timed`, and every stderr line stamped with its arrival (seconds since start):
    `ci` prints one progress line per stage event, so the stamps give each stage's start
    and end on one clock, to the millisecond."""
    lines: list[tuple[float, str]] = []
    out: list[str] = []
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout, proc.stderr

    def read_err() -> None:
        for line in stderr:
            lines.append((round(time.perf_counter() - started, 3), line.rstrip("\n")))

    def read_out() -> None:
        out.append(stdout.read())

    threads = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out)]
    for t in threads:
        t.start()
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    seconds = round(time.perf_counter() - started, 3)
    for t in threads:
        t.join(30)
    return Result(seconds, code, "".join(out), "\n".join(ln for _, ln in lines)), lines
