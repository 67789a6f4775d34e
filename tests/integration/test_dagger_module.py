"""The Dagger module's functions (`dagger call plan|build|release`) through the fake engine.

What runs for real here: the dagger-io SDK's module machinery (the `--register` entrypoint
of the Python runtime, which sends the module's type definitions to the engine, validated
against the v0.21.8 schema; and `Module.get_result`, the call the runtime makes for
`dagger call FN --arg ...` once it has read the function call's name and JSON inputs), the
source handed over as a Directory ID, the library's plan, job and release (its Dagger
children connect to the same session, as in a runtime container), and the real registry
for publish and `ci merge`.

What only a real engine proves: loading dagger.json and the module source (the "include" of
ci/, the uv lock/sync install of this library and the PyPI SDK, the python:3.11 base image),
codegen, the `dagger call` CLI's parsing of flags into arguments (`--source=.`, the
DefaultPath and Ignore of `source`, `--env`, a Secret for `--registry-password` — the fake
never reads a secret back), the runtime reading `currentFunctionCall` and returning the
value or error (the fake answers defaults there, so the call is made through get_result),
`Directory.export` into the runtime container and the children's `host.directory` reading
it back there, and that those children really share the function's session.

The fake copies a host directory on `Directory.export` (the only export a function here makes).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from ci.adapters.engines import dagger_session as ds
from ci.core.results import PlatformResult
from tests.fixtures.dagger_fake import DAGGER_VARS, DaggerFake, write_tiny_service
from tests.fixtures.registry import Registry, push_tiny_image

pytestmark = [pytest.mark.integration, pytest.mark.dagger_fake, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
MODULE_SRC = REPO / ".dagger" / "src"
GIT = ["git", "-c", "user.name=maci test", "-c", "user.email=test@maci.invalid"]
CONFIG = """
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
"""


def load_module() -> Any:
    if str(MODULE_SRC) not in sys.path:
        sys.path.insert(0, str(MODULE_SRC))
    return importlib.import_module("multiarch_ci_dagger")


def make_project(root: Path, image: str) -> Path:
    write_tiny_service(root)
    (root / "ci.toml").write_text(CONFIG.format(image=image))
    subprocess.run([*GIT, "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-q", "-m", "svc"], check=True)
    return root


@pytest.fixture
def runtime_env(dagger_fake: DaggerFake, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """os.environ as a module's runtime container has it: the session the engine opened for
    the function, no dagger CLI, nothing of a CI system."""
    for key in list(os.environ):
        if key in DAGGER_VARS or key.startswith(("MACI_", "GITHUB_", "GITLAB_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for key, value in dagger_fake.session_env().items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def call(fn: str, project: Path, **inputs: Any) -> Any:
    """What the runtime does for `dagger call FN --source=PROJECT --arg=...`: the source as a
    Directory ID, every input as JSON, through the SDK's Module.get_result."""
    mod = load_module().MultiarchCi.__dagger_module__

    async def go() -> Any:
        from dagger import dag

        async with ds.connect(os.environ):
            source = await dag.host().directory(str(project)).id()
            return await mod.get_result("MultiarchCi", {}, fn, {"source": source, **inputs})

    return anyio.run(go)


def refused(fn: str, project: Path, **inputs: Any) -> str:
    from multiarch_ci_dagger.main import Refused

    with pytest.raises(Refused) as info:
        call(fn, project, **inputs)
    return str(info.value)


def ci(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ci", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120, check=False)


# ------------------------------------------------------------------ registration


def test_the_runtime_registers_the_module_against_the_schema(
    dagger_fake: DaggerFake, tmp_path: Path
) -> None:
    """The Python runtime's `--register` step (what `dagger functions` triggers): the type
    definitions of MultiarchCi and its functions reach the engine, every document valid."""
    out = tmp_path / "module.json"
    env = {k: v for k, v in os.environ.items() if k not in DAGGER_VARS}
    env.update(dagger_fake.session_env())
    env.update({"DAGGER_MODULE": "multiarch-ci", "DAGGER_MAIN_OBJECT": "MultiarchCi",
                "DAGGER_DEFAULT_PYTHON_PACKAGE": "multiarch_ci_dagger",
                "DAGGER_MODULE_FILE": str(out),
                "PYTHONPATH": os.pathsep.join([str(MODULE_SRC), str(REPO)])})
    # the runtime's entrypoint (sdk/python/runtime/template/runtime.py), run with --register
    code = "import sys\nfrom dagger.mod.cli import app\nsys.exit(app(None, True))\n"
    proc = subprocess.run([sys.executable, "-c", code, "--register"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text()).startswith("Module:")
    objects = dagger_fake.calls("withObject")
    main = [c for c in objects if c.get("name") == "MultiarchCi" and c.get("description")]
    assert len(main) == 1 and "multi-architecture" in main[0]["description"]
    assert len([c for c in objects if "object" in c]) == 1  # module.withObject(object: ...)
    # "" is the constructor; the rest are the functions `dagger functions` lists
    assert sorted(c["name"] for c in dagger_fake.calls("function")) == [
        "", "build", "plan", "release"]
    args = {c["name"]: c for c in dagger_fake.calls("withArg")}
    assert args["source"]["defaultPath"] == "."
    assert ".venv" in args["source"]["ignore"]
    assert args["pipeline"]["defaultValue"] == '"release"'
    assert "defaultValue" not in args["platform"] or args["platform"]["defaultValue"] == "null"


# ------------------------------------------------------------------ plan


def test_plan_is_ci_plan_json(runtime_env: dict[str, str], tmp_path: Path) -> None:
    project = make_project(tmp_path / "svc", "127.0.0.1:5999/team/svc")
    out = json.loads(call("plan", project))
    cli = ci(["plan", "--engine", "dagger", "--json"], project)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert out == json.loads(cli.stdout)
    assert out["ok"] is True
    assert {j["platform"]: j["placement"]["kind"] for j in out["jobs"]} == {
        "linux/amd64": "native", "linux/arm64": "emulated"}
    assert [r["engine"] for r in out["runners"]] == ["dagger"]


def test_plan_only_the_platforms_asked(runtime_env: dict[str, str], tmp_path: Path) -> None:
    project = make_project(tmp_path / "svc", "127.0.0.1:5999/team/svc")
    out = json.loads(call("plan", project, platform=["linux/arm64"]))
    assert [j["platform"] for j in out["jobs"]] == ["linux/arm64"]


def test_usage_errors_are_one_line_refusals(runtime_env: dict[str, str], tmp_path: Path) -> None:
    project = make_project(tmp_path / "svc", "127.0.0.1:5999/team/svc")
    assert refused("plan", project, env=["NOEQUALS"]) == "--env 'NOEQUALS': expected NAME=VALUE"
    message = refused("build", project, platform="linux/s390x")
    assert message.startswith("--platform linux/s390x: not one of the project's platforms")
    (project / "ci.toml").unlink()
    assert "no ci.toml found" in refused("plan", project)


# ------------------------------------------------------------------ build (ci job)


def test_build_legs_are_ci_job_results_that_ci_merge_publishes(
    runtime_env: dict[str, str], dagger_fake: DaggerFake, registry: Registry, tmp_path: Path
) -> None:
    """Two `dagger call build` legs, then `ci merge` of what they returned: the matrix with
    the module as its legs publishes one index of exactly their digests."""
    repo = "module/legs"
    digests = {p: push_tiny_image(registry.url, repo, p) for p in ("linux/amd64", "linux/arm64")}
    dagger_fake.engine.publish_digests = {p.replace("/", "-"): d for p, d in digests.items()}
    project = make_project(tmp_path / "svc", f"{registry.host}/{repo}")
    files = []
    for platform, digest in digests.items():
        text = call("build", project, platform=platform, run_id="run-77")
        result = PlatformResult.model_validate_json(text)
        assert (result.platform, result.status, result.engine) == (platform, "passed", "dagger")
        assert result.digest == digest and result.run_id == "run-77"
        assert result.source.branch == "main" and result.source.sha  # git of the export
        path = tmp_path / f"result-{platform.replace('/', '-')}.json"
        path.write_text(text)
        files.append(str(path))
    assert registry.tags(repo) == []  # legs push by digest only
    merged = ci(["merge", *files, "--json"], project)
    assert merged.returncode == 0, merged.stderr[-3000:]
    published = json.loads(merged.stdout)["publish"]
    assert sorted(published["manifests"].values()) == sorted(digests.values())
    assert sorted(registry.tags(repo)) == sorted(published["tags"])


def test_a_failed_build_is_refused_with_its_result(
    runtime_env: dict[str, str], dagger_fake: DaggerFake, registry: Registry, tmp_path: Path
) -> None:
    dagger_fake.fail_exec("pytest", stderr="E   assert 1 == 2")
    project = make_project(tmp_path / "svc", f"{registry.host}/module/failed")
    message = refused("build", project, platform="linux/amd64")
    first, _, text = message.partition("\n")
    assert first.startswith("linux/amd64: tests failed on linux/amd64")
    result = PlatformResult.model_validate_json(text)
    assert result.status == "failed" and result.digest is None
    assert result.failure is not None and result.failure.step == "test"


# ------------------------------------------------------------------ release (ci run)


def test_release_publishes_both_platforms(
    runtime_env: dict[str, str], dagger_fake: DaggerFake, registry: Registry, tmp_path: Path
) -> None:
    repo = "module/release"
    digests = {p: push_tiny_image(registry.url, repo, p) for p in ("linux/amd64", "linux/arm64")}
    dagger_fake.engine.publish_digests = {p.replace("/", "-"): d for p, d in digests.items()}
    project = make_project(tmp_path / "svc", f"{registry.host}/{repo}")
    out = json.loads(call("release", project))
    assert out["passed"] is True and out["pipeline"] == "release"
    platforms = {p["platform"]: p for p in out["verdict"]["platforms"]}
    assert {p: r["digest"] for p, r in platforms.items()} == digests
    assert {r["engine"] for r in platforms.values()} == {"dagger"}
    published = out["published"]
    assert sorted(published["manifests"].values()) == sorted(digests.values())
    assert sorted(registry.tags(repo)) == sorted(published["tags"])
    assert {"main", "latest"} <= set(published["tags"])


def test_a_rejected_release_is_refused_and_moves_nothing(
    runtime_env: dict[str, str], dagger_fake: DaggerFake, registry: Registry, tmp_path: Path
) -> None:
    repo = "module/rejected"
    dagger_fake.engine.publish_digests = {
        p.replace("/", "-"): push_tiny_image(registry.url, repo, p)
        for p in ("linux/amd64", "linux/arm64")}
    dagger_fake.fail_exec("pytest", platform="linux/arm64")
    project = make_project(tmp_path / "svc", f"{registry.host}/{repo}")
    message = refused("release", project)
    first, _, text = message.partition("\n")
    assert first == ("release: release rejected, nothing published: linux/arm64: tests failed "
                     "on linux/arm64 (1 failed, 0 errors of 3)")
    out = json.loads(text)
    assert out["passed"] is False and out["published"] is None
    assert any("linux/arm64" in r for r in out["verdict"]["reasons"])
    assert registry.tags(repo) == [] and registry.indexes(repo) == []


def test_release_dry_run_moves_nothing(
    runtime_env: dict[str, str], dagger_fake: DaggerFake, registry: Registry, tmp_path: Path
) -> None:
    repo = "module/dry"
    dagger_fake.engine.publish_digests = {
        p.replace("/", "-"): push_tiny_image(registry.url, repo, p)
        for p in ("linux/amd64", "linux/arm64")}
    project = make_project(tmp_path / "svc", f"{registry.host}/{repo}")
    # the CLI's rule too: a release publishes every platform of the project or none
    assert "a release publishes all of them" in refused("release", project,
                                                        platform=["linux/amd64"])
    out = json.loads(call("release", project, dry_run=True))
    assert out["passed"] is True
    assert sorted(p["platform"] for p in out["verdict"]["platforms"]) == [
        "linux/amd64", "linux/arm64"]
    assert registry.tags(repo) == [] and registry.indexes(repo) == []


@pytest.fixture(autouse=True)
def _no_leftover_exports() -> Iterator[None]:
    """Each function removes the folder it exported the source to."""
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("maci-source-*"))
    yield
    assert set(Path(tempfile.gettempdir()).glob("maci-source-*")) <= before
