"""A project's OWN pipelines (examples/hello/pipelines/*.py) run as a new user runs them.

examples/hello is copied into a temp folder, committed there as its own git repository and
pointed at the test registry (its pyproject.toml rewritten, a fresh repository per test);
then the real CLI runs in a subprocess: the console script, `python -m ci`, and the
project's file itself as `python -m pipelines.NAME`. Every case checks the registry itself.

Most cases build linux/amd64 only (`MACI_PROJECT__PLATFORMS` overrides the config); one
builds both platforms (arm64 under qemu).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ci.adapters.registry import RegistryClient
from ci.core import config as cfg
from ci.stages.publish import verify_index
from tests.fixtures.procs import free_port, port_open, wait_until
from tests.fixtures.registry import FaultProxy, Registry
from tests.fixtures.sampleapp import head_sha, remove_local_images

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = Path(__file__).parents[2] / "examples" / "hello"
EXAMPLE_IMAGE = "127.0.0.1:5000/examples/hello"
CONSOLE_SCRIPT = Path(sys.executable).parent / "ci"
GIT = ["git", "-c", "user.name=maci test", "-c", "user.email=test@maci.invalid"]
AMD64 = ["linux/amd64"]
BOTH = ["linux/amd64", "linux/arm64"]

ROGUE_IGNORES = '''\
"""Rejects its own verdict, then publishes anyway."""
import sys

from ci import Release, main


def pipeline(run: Release) -> int:
    sys.stderr.write(f"rogue: __debug__={__debug__}\\n")
    run.plan()
    run.platform_jobs()
    run.add_gate("rogue", False, "x")
    run.decide(require_model=False)
    run.publish()  # the verdict was rejected: this must move nothing
    return 0


if __name__ == "__main__":
    raise SystemExit(main(pipeline))
'''

ROGUE_FORGES = '''\
"""Rejects its own verdict, then swaps in a copy that says it passed, and publishes."""
import sys

from ci import Release


def pipeline(run: Release) -> int:
    sys.stderr.write(f"rogue: __debug__={__debug__}\\n")
    run.plan()
    run.platform_jobs()
    run.add_gate("rogue", False, "x")
    verdict = run.decide(require_model=False)
    run.verdict = verdict.model_copy(update={"passed": True, "reasons": []})
    run.publish()
    return 0
'''


@dataclass
class Hello:
    """A committed copy of examples/hello whose image is a fresh repository of the test
    registry (pushed through the session proxy, read back from the registry itself)."""

    path: Path
    repo: str
    registry: Registry
    proxy: FaultProxy

    @property
    def image(self) -> str:
        return f"{self.proxy.host}/{self.repo}"

    @property
    def pyproject(self) -> Path:
        return self.path / "pyproject.toml"

    @property
    def state(self) -> Path:
        """The project's state dir, as its config names it (hello: .ci-state, not .maci)."""
        return cfg.load(self.pyproject, {}, self.path).state_path

    def env(self, platforms: list[str] | None = AMD64, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MACI_", "GITHUB_", "GITLAB_", "MLFLOW_"))
               and k not in {"CI_COMMIT_SHA", "PYTHONOPTIMIZE", "PYTHONPATH"}}
        if platforms is not None:
            env["MACI_PROJECT__PLATFORMS"] = json.dumps(platforms)
        env["PYTHONUNBUFFERED"] = "1"
        return {**env, **extra}

    def run(self, *argv: str | Path, cwd: Path | None = None,
            platforms: list[str] | None = AMD64,
            timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in argv], cwd=cwd or self.path,
                              env=self.env(platforms), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def ci(self, *args: str | Path, **kw: Any) -> subprocess.CompletedProcess[str]:
        """The installed console script, as a user types `ci ...`."""
        return self.run(CONSOLE_SCRIPT, *args, **kw)

    def tags(self) -> list[str]:
        return self.registry.tags(self.repo)

    def index_platforms(self, tag: str) -> list[str]:
        return sorted(RegistryClient(self.registry.host).index_platforms(self.repo, tag))

    def tag_digest(self, tag: str) -> str | None:
        return RegistryClient(self.registry.host).resolve(self.repo, tag)


def copy_example(dest: Path, image: str) -> Path:
    """examples/hello in its own git repository, its config naming `image`."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".ci-state", "__pycache__"))
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    assert f'image = "{EXAMPLE_IMAGE}"' in text
    pyproject.write_text(text.replace(EXAMPLE_IMAGE, image))
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(dest)], check=True)
    subprocess.run([*GIT, "-C", str(dest), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(dest), "commit", "-q", "-m", "hello"], check=True)
    return dest


@pytest.fixture
def hello(tmp_path: Path, registry: Registry, registry_proxy: FaultProxy) -> Iterator[Hello]:
    repo = f"e2e/hello-{secrets.token_hex(3)}"
    project = Hello(copy_example(tmp_path / "hello", f"{registry_proxy.host}/{repo}"), repo,
                    registry, registry_proxy)
    yield project
    remove_local_images(project.image)


def today() -> str:
    return f"{datetime.now(UTC):%Y%m%d}"


def nightly_tags(before: str, after: str) -> list[list[str]]:
    """The tags a nightly run may have made (the date read by the run's clock)."""
    return [sorted(["nightly", f"nightly-{d}"]) for d in dict.fromkeys([before, after])]


def assert_nightly_published(project: Hello, before: str, platforms: list[str]) -> None:
    """Exactly `nightly` + `nightly-<date>`, on ONE index holding exactly `platforms`;
    none of the configured release tags (latest, main, sha-*)."""
    tags = project.tags()
    assert tags in nightly_tags(before, today()), tags
    dated = next(t for t in tags if t.startswith("nightly-"))
    assert project.tag_digest("nightly") == project.tag_digest(dated)
    [index] = project.registry.indexes(project.repo)
    assert index["digest"] == project.tag_digest("nightly")
    assert verify_index(RegistryClient(project.registry.host), project.repo, "nightly",
                        platforms) == sorted(platforms)
    assert index["annotations"]["org.opencontainers.image.revision"] == head_sha(project.path)


def one_line(stderr: str, needle: str) -> str:
    lines = [line for line in stderr.splitlines() if needle in line]
    assert len(lines) == 1, stderr
    return lines[0]


# ------------------------------------------------------------------ nightly


def test_nightly_with_the_console_script_publishes_both_platforms(
        hello: Hello, docker_stack: None) -> None:
    before = today()
    proc = hello.ci("run", "nightly", platforms=None)  # the config's two platforms
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_nightly_published(hello, before, BOTH)
    assert "tags: nightly-" in proc.stdout and "RELEASED" in proc.stdout
    verdict = json.loads((hello.state / "verdict.json").read_text())
    assert verdict["passed"] is True and verdict["model_required"] is False
    assert {p["platform"]: p["placement"] for p in verdict["platforms"]} == {
        "linux/amd64": "native", "linux/arm64": "emulated"}
    assert not (hello.path / ".maci").exists()  # state_dir from [tool.ci.project]


def test_nightly_from_another_directory_with_the_config_path(
        hello: Hello, docker_stack: None, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = today()
    proc = hello.ci("run", "nightly", "-c", hello.pyproject, "--json", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["passed"] is True and out["pipeline"] == "nightly"
    assert sorted(out["published"]["tags"]) in nightly_tags(before, today())
    assert_nightly_published(hello, before, AMD64)
    assert list(elsewhere.iterdir()) == []  # state lives with the project, not the cwd


def test_nightly_with_python_m_ci(hello: Hello, docker_stack: None) -> None:
    before = today()
    proc = hello.run(sys.executable, "-m", "ci", "run", "nightly")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_nightly_published(hello, before, AMD64)


def test_the_projects_own_file_runs_as_a_module(hello: Hello, docker_stack: None) -> None:
    before = today()
    proc = hello.run(sys.executable, "-m", "pipelines.nightly", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["passed"] is True and out["verdict"]["passed"] is True
    assert sorted(out["published"]["tags"]) == hello.tags()
    assert_nightly_published(hello, before, AMD64)
    # the run knows which pipeline it was (it is `nightly`, not the module's `__main__`)
    assert out["pipeline"] == "nightly"


# ------------------------------------------------------------------ guarded


def test_guarded_refuses_during_a_freeze_and_releases_after_it(
        hello: Hello, docker_stack: None) -> None:
    (hello.path / "RELEASE_FREEZE").write_text("until the 2.0 launch\nask #release first\n")
    frozen = hello.ci("run", "guarded")
    assert frozen.returncode == 1, frozen.stderr[-3000:]
    reason = "freeze: release freeze: until the 2.0 launch"
    assert one_line(frozen.stderr, "release freeze") == \
        f"error: release rejected, nothing published: {reason}"
    assert "ask #release" not in frozen.stderr + frozen.stdout
    assert reason in frozen.stdout  # the summary's reasons
    verdict = json.loads((hello.state / "verdict.json").read_text())
    assert verdict["passed"] is False and verdict["reasons"] == [reason]
    assert {"name": "freeze", "passed": False, "reason": "release freeze: until the 2.0 launch"} \
        in verdict["gates"]
    assert [p["status"] for p in verdict["platforms"]] == ["passed"]  # only the gate said no
    assert hello.tags() == [] and hello.registry.indexes(hello.repo) == []

    (hello.path / "RELEASE_FREEZE").unlink()
    released = hello.ci("run", "guarded")
    assert released.returncode == 0, released.stderr[-3000:]
    short = head_sha(hello.path)[:7]
    assert hello.tags() == sorted([f"sha-{short}", "main", "latest"])
    assert hello.index_platforms("latest") == AMD64
    verdict = json.loads((hello.state / "verdict.json").read_text())
    assert verdict["passed"] is True and verdict["reasons"] == []
    assert {"name": "freeze", "passed": True, "reason": ""} in verdict["gates"]


# ------------------------------------------------------------------ verify


def test_verify_stops_at_the_verdict_and_publishes_nothing(hello: Hello,
                                                          docker_stack: None) -> None:
    proc = hello.ci("run", "verify")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert one_line(proc.stderr, "verify:") == "verify: passed on linux/amd64; nothing published"
    assert json.loads((hello.state / "verdict.json").read_text())["passed"] is True
    assert hello.tags() == [] and hello.registry.indexes(hello.repo) == []
    assert len(hello.registry.manifests(hello.repo)) == 1  # the platform image, by digest only


# ------------------------------------------------------------------ rogue


@pytest.mark.parametrize("source, message", [
    (ROGUE_IGNORES, "error: release rejected, nothing published: rogue: x"),
    (ROGUE_FORGES, "error: nothing published: this verdict was not made by decide()"),
], ids=["ignores-the-verdict", "forges-a-passed-copy"])
def test_a_rogue_pipeline_under_python_O_publishes_nothing(
        hello: Hello, docker_stack: None, source: str, message: str) -> None:
    (hello.path / "pipelines" / "rogue.py").write_text(source)
    proc = hello.run(sys.executable, "-O", "-m", "ci", "run", "rogue")
    assert "rogue: __debug__=False" in proc.stderr  # really optimised: no assert runs
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert one_line(proc.stderr, "nothing published") == message
    assert hello.tags() == [] and hello.registry.indexes(hello.repo) == []
    verdict = json.loads((hello.state / "verdict.json").read_text())
    assert verdict["passed"] is False and verdict["reasons"] == ["rogue: x"]


# ------------------------------------------------------------------ bad input (no build)


def test_an_unknown_pipeline_is_one_line_naming_the_expected_file(hello: Hello) -> None:
    proc = hello.ci("run", "nosuch")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert str(hello.path / "pipelines" / "nosuch.py") in line
    assert not hello.state.exists()  # refused before any work


def test_a_pipeline_with_a_syntax_error_is_one_line_with_file_and_line(hello: Hello) -> None:
    path = hello.path / "pipelines" / "broken.py"
    path.write_text("from ci import Release\n\n\ndef pipeline(run: Release) -> int\n"
                    "    return 0\n")
    proc = hello.ci("run", "broken")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}:4: syntax error"), line
    assert not hello.state.exists()


@pytest.mark.parametrize("name", ["../x", "pipelines/nightly", "nightly.py"])
def test_a_pipeline_name_that_is_a_path_is_refused(hello: Hello, name: str) -> None:
    (hello.path.parent / "x.py").write_text("def pipeline(run):\n    return 0\n")
    proc = hello.ci("run", name)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert f"pipeline name {name!r}" in line
    assert not hello.state.exists()


# ------------------------------------------------------------------ the README's other commands


def test_nightly_dry_run_prints_the_digest_and_publishes_nothing(
        hello: Hello, docker_stack: None) -> None:
    proc = hello.ci("run", "nightly", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DRY RUN: nothing was published" in proc.stdout
    assert "sha256:" in proc.stdout.split("DRY RUN", 1)[1]
    assert hello.tags() == [] and hello.registry.indexes(hello.repo) == []


def test_the_service_on_its_own_tests_and_serves_on_the_host(hello: Hello) -> None:
    """`python3 -m pytest` and `python3 -m app` from the example's README, on the host."""
    tests = hello.run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      platforms=None, timeout=120)
    assert tests.returncode == 0, tests.stdout[-2000:]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=hello.path, text=True,
                              env={**hello.env(None), "PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open(port), 20, "hello app")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_readme_buildx_line_builds_the_arm64_runtime(hello: Hello, docker_stack: None) -> None:
    tag = f"hello-readme:{secrets.token_hex(3)}"
    proc = hello.run("docker", "buildx", "build", "--platform", "linux/arm64", "--build-arg",
                     "BASE=maci/python:bookworm-arm64", "--target", "runtime", "-t", tag,
                     "--load", ".", platforms=None, timeout=900)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        arch = subprocess.run(["docker", "image", "inspect", "-f", "{{.Architecture}}", tag],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert arch == "arm64"
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)
