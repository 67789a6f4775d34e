"""The engine's own word on its platform: `defaultPlatform` decides where "native" is.

At plan time every reachable Dagger runner is asked `defaultPlatform` through the REAL
dagger-io SDK, in a short child session of its own (the same routing as the run: the
`dagger run` session for the default engine, `_EXPERIMENTAL_DAGGER_RUNNER_HOST` for a runner
host), against the schema-validating fake engine, which answers per runner host. The
declared `[[runners]] platform` only stands in when the engine does not answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from ci.adapters import inventory
from ci.adapters.engines.dagger_routing import Options, probe_engine, run_jobs_dagger
from ci.core import config as cfg
from ci.core import plan
from ci.core.errors import EngineUnreachable
from ci.core.placement import qemu_fallback
from ci.core.plan import DEFAULT_RUNNER
from ci.stages.prepare import prepare
from tests.fixtures.dagger_fake import DaggerFake, clean_environ, write_tiny_service
from tests.fixtures.procs import wait_until
from tests.verdicts import verdict_for

pytestmark = [pytest.mark.dagger_fake, pytest.mark.timeout(120)]

IMAGE = "127.0.0.1:5999/team/svc"
ARM_HOST = "tcp://arm64-engine.example:8080"
RUN = Options(cleanup_tmp_tags=False)  # the default connect timeout: nothing here hangs
HEAD = f"""
[project]
name = "svc"
image = "{IMAGE}"
platforms = ["linux/amd64", "linux/arm64"]

[build]
target = "runtime"
base_image = "maci/python:bookworm-{{arch}}"

[test]
target = "test"
command = ["python3", "-m", "pytest", "-q", "--junitxml=/tmp/maci-junit.xml"]
"""


def arm_runner(platform: str | None = None) -> str:
    declared = f'platform = "{platform}"\n' if platform else ""
    return f'\n[[runners]]\nname = "arm"\nengine = "dagger"\nhost = "{ARM_HOST}"\n{declared}'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny service: a Dockerfile with test and runtime stages built FROM ${{BASE}}."""
    return write_tiny_service(tmp_path / "svc")


def load(project: Path, text: str) -> cfg.Config:
    (project / "ci.toml").write_text(text)
    return cfg.loads(text, root=str(project))


def placements(the_plan: plan.Plan) -> list[tuple[str, str, str | None]]:
    return [(j.platform, j.placement.kind, j.placement.runner) for j in the_plan.jobs]


def tokens_by_host(fake: DaggerFake) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for s in fake.sessions():
        found.setdefault(s["runner_host"], []).append(s["token"])
    return found


# ------------------------------------------------------------------ the engine decides


def test_undeclared_runner_is_native_where_its_engine_says_and_the_run_agrees(
    dagger_fake: DaggerFake, project: Path
) -> None:
    dagger_fake.engine.default_platforms = {ARM_HOST: "linux/arm64"}  # default engine: amd64
    env = {**clean_environ(), **dagger_fake.cli_env()}
    config = load(project, HEAD + arm_runner())

    prepared = prepare(config, engine="dagger", environ=env)

    the_plan = prepared.plan
    by_name = {r.name: r for r in the_plan.runners}
    assert {n: (r.native, r.platform_source, r.note) for n, r in by_name.items()} == {
        "arm": ("linux/arm64", "engine", ""), DEFAULT_RUNNER: ("linux/amd64", "engine", "")}
    assert by_name["arm"].version == "v0.21.8" and by_name["arm"].reachable
    assert placements(the_plan) == [("linux/amd64", "native", DEFAULT_RUNNER),
                                    ("linux/arm64", "native", "arm")]
    assert the_plan.job("linux/arm64").placement.reason == "runner 'arm' is linux/arm64"
    # each engine was asked in a session of its own, routed like the run's
    plan_sessions = tokens_by_host(dagger_fake)
    assert {h: len(t) for h, t in plan_sessions.items()} == {"": 1, ARM_HOST: 1}
    for tokens in plan_sessions.values():
        assert dagger_fake.calls("defaultPlatform", tokens[0]) == [{}]
        assert dagger_fake.closed(tokens[0])

    results = anyio.run(lambda: run_jobs_dagger(prepared.specs, the_plan.runners, env,
                                                options=RUN))

    verdict = verdict_for(results, prepared.expected, IMAGE)
    assert verdict.passed
    assert [(p.platform, p.placement, p.runner) for p in verdict.platforms] == \
        placements(the_plan)
    assert all(p.emulated_seconds == 0 for p in verdict.platforms)
    planned = {t for tokens in plan_sessions.values() for t in tokens}
    run_sessions = {s["token"]: s["runner_host"] for s in dagger_fake.sessions()
                    if s["token"] not in planned}
    asked = {host: {c["platform"] for c in dagger_fake.calls("dockerBuild", token)}
             for token, host in run_sessions.items()}
    assert asked == {"": {"linux/amd64"}, ARM_HOST: {"linux/arm64"}}


def test_engine_wins_over_a_wrong_declared_platform_and_the_plan_says_so(
    dagger_fake: DaggerFake, project: Path
) -> None:
    dagger_fake.engine.default_platforms = {ARM_HOST: "linux/arm64"}
    env = {**clean_environ(), **dagger_fake.cli_env()}
    config = load(project, HEAD + arm_runner("linux/amd64"))

    the_plan = plan.make_plan(config, inventory.discover(plan.runners_for(config, "dagger"), env))

    arm = next(r for r in the_plan.runners if r.name == "arm")
    assert (arm.declared, arm.native, arm.platform_source) == ("linux/amd64", "linux/arm64",
                                                               "engine")
    assert arm.note == ("declared platform linux/amd64 but the engine reports linux/arm64: "
                        "using the engine's")
    assert "linux/amd64" in arm.emulates and "linux/arm64" not in arm.emulates
    assert placements(the_plan) == [("linux/amd64", "native", DEFAULT_RUNNER),
                                    ("linux/arm64", "native", "arm")]
    assert the_plan.job("linux/arm64").placement.reason == (
        "runner 'arm' is linux/arm64 (the engine's answer; declared linux/amd64)")
    dumped = the_plan.model_dump()["runners"]
    assert next(r for r in dumped if r["name"] == "arm")["platform_source"] == "engine"


def test_unreachable_runner_falls_back_to_its_declared_platform_flagged_as_declared(
    dagger_fake: DaggerFake, project: Path
) -> None:
    dagger_fake.engine.default_platforms = {ARM_HOST: "linux/arm64"}
    env = {**clean_environ(), **dagger_fake.cli_env(), "MACI_DAGGER_FAKE_UNREACHABLE": ARM_HOST}
    config = load(project, HEAD + arm_runner("linux/arm64"))

    prepared = prepare(config, engine="dagger", environ=env)

    the_plan = prepared.plan
    arm = next(r for r in the_plan.runners if r.name == "arm")
    assert (arm.reachable, arm.native, arm.platform_source) == (True, "linux/arm64", "declared")
    assert arm.note.startswith("engine not reached at plan time (")
    assert arm.note.endswith("): using the declared platform linux/arm64")
    assert ARM_HOST in arm.note
    assert placements(the_plan)[1] == ("linux/arm64", "native", "arm")
    assert the_plan.job("linux/arm64").placement.reason == (
        "runner 'arm' is linux/arm64 (declared; engine not reached at plan time)")
    assert {s["runner_host"] for s in dagger_fake.sessions()} == {""}  # the CLI refused arm
    # at run time it is still down: re-placed on the default engine, emulated, and said so
    results = anyio.run(lambda: run_jobs_dagger(
        prepared.specs, the_plan.runners, env, options=RUN,
        replace=qemu_fallback(the_plan.runners, the_plan.fallback)))
    assert [(r.platform, r.placement, r.runner, r.status) for r in results] == [
        ("linux/amd64", "native", DEFAULT_RUNNER, "passed"),
        ("linux/arm64", "emulated", DEFAULT_RUNNER, "passed")]


def test_unreachable_runner_without_a_declared_platform_is_not_guessed(
    dagger_fake: DaggerFake, project: Path
) -> None:
    env = {**clean_environ(), **dagger_fake.cli_env(), "MACI_DAGGER_FAKE_UNREACHABLE": ARM_HOST}
    config = load(project, HEAD + arm_runner())

    the_plan = plan.make_plan(config, inventory.discover(plan.runners_for(config, "dagger"), env))

    arm = next(r for r in the_plan.runners if r.name == "arm")
    assert (arm.reachable, arm.native) == (False, None)
    assert arm.error.endswith("and no platform declared")
    assert placements(the_plan) == [("linux/amd64", "native", DEFAULT_RUNNER),
                                    ("linux/arm64", "emulated", DEFAULT_RUNNER)]


def test_a_probe_of_an_engine_that_never_answers_is_cut_off(dagger_fake: DaggerFake) -> None:
    env = {**clean_environ(), **dagger_fake.cli_env(), "MACI_DAGGER_FAKE_HANG": ARM_HOST}
    started = time.monotonic()
    with pytest.raises(EngineUnreachable, match=r"no session within 1 s"):
        probe_engine(ARM_HOST, env, connect_timeout=1)
    assert time.monotonic() - started < 15
    # the fake CLI (when the child got that far before its watchdog) ends with the child
    for session in dagger_fake.sessions():
        wait_until(lambda s=session: dagger_fake.closed(s["token"]), 10, "fake CLI exit")


# ------------------------------------------------------------------ the `dagger run` path


def test_dagger_run_session_is_asked_its_default_platform(
    dagger_fake: DaggerFake, project: Path
) -> None:
    """Under `dagger run` the default engine is the session's: an arm64 engine runs arm64
    natively and amd64 emulated, whatever this host is."""
    dagger_fake.engine.default_platforms = {"": "linux/arm64"}
    env = {**clean_environ(), **dagger_fake.session_env()}
    config = load(project, HEAD)

    prepared = prepare(config, engine="dagger", environ=env)

    (local,) = prepared.plan.runners
    assert (local.native, local.platform_source) == ("linux/arm64", "engine")
    assert placements(prepared.plan) == [("linux/amd64", "emulated", DEFAULT_RUNNER),
                                         ("linux/arm64", "native", DEFAULT_RUNNER)]
    assert dagger_fake.calls("defaultPlatform", dagger_fake.server.token) == [{}]
    assert dagger_fake.sessions() == []  # the session was reused: no CLI started

    results = anyio.run(lambda: run_jobs_dagger(prepared.specs, prepared.plan.runners, env,
                                                options=RUN))
    verdict = verdict_for(results, prepared.expected, IMAGE)
    assert [(p.platform, p.placement) for p in verdict.platforms] == [
        ("linux/amd64", "emulated"), ("linux/arm64", "native")]
    assert verdict.platforms[0].emulated_seconds > 0
    assert verdict.platforms[1].emulated_seconds == 0


def test_ci_plan_shows_where_native_came_from(dagger_fake: DaggerFake, project: Path) -> None:
    """`ci plan` (table and --json) through the real CLI, in a process of its own."""
    dagger_fake.engine.default_platforms = {ARM_HOST: "linux/arm64"}
    load(project, HEAD + arm_runner("linux/amd64"))
    env = {**clean_environ(), **dagger_fake.cli_env(), "COLUMNS": "200"}
    env = {k: v for k, v in env.items() if not k.startswith(("GITHUB_", "GITLAB_"))}
    cmd = [sys.executable, "-m", "ci", "plan", "--engine", "dagger"]

    out = subprocess.run([*cmd, "--json"], cwd=project, env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    runners = {r["name"]: r for r in json.loads(out.stdout)["runners"]}
    assert {n: (r["native"], r["platform_source"]) for n, r in runners.items()} == {
        "arm": ("linux/arm64", "engine"), DEFAULT_RUNNER: ("linux/amd64", "engine")}
    assert "declared platform linux/amd64" in runners["arm"]["note"]

    table = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert table.returncode == 0, table.stderr
    text = " ".join(table.stdout.split())
    assert "runner arm: native linux/arm64 (from the engine); declared platform linux/amd64 " \
           "but the engine reports linux/arm64: using the engine's" in text
    assert f"runner {DEFAULT_RUNNER}: native linux/amd64 (from the engine)" in text
