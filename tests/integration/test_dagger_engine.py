"""The Dagger engine on the REAL dagger-io SDK against the schema-validating fake engine.

Both connection paths (`dagger run` session variables, and provisioning through a CLI),
what the pipeline asked the engine (platforms, base, exec args, cache volumes, secrets,
publish), exec failure mapping, per-runner routing seen by the fake CLI, and the fail-fast
path with no engine. Every document is validated against the schema by the fixture.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ci.adapters import inventory
from ci.adapters.engines import dagger_session as ds
from ci.adapters.engines.dagger import TMP_TAG_PREFIX, DaggerEngine, digest_from_ref, temp_tag
from ci.adapters.engines.dagger_child import ChildError, error_from
from ci.adapters.engines.dagger_routing import (
    Options,
    group_by_runner,
    run_jobs_dagger,
    run_single_engine_dagger,
)
from ci.adapters.registry import Credentials
from ci.core import config as cfg
from ci.core import plan, redact
from ci.core.errors import EngineUnreachable, GateFailed, PlanUnavailable, StepFailed, TestsFailed
from ci.core.plan import Placement, RunnerInfo
from ci.core.results import JobSpec, SourceInfo
from tests.fixtures.dagger_fake import DaggerFake, clean_environ, write_tiny_service
from tests.fixtures.procs import wait_until
from tests.verdicts import permit_for

pytestmark = [pytest.mark.dagger_fake, pytest.mark.timeout(120)]

IMAGE = "127.0.0.1:5999/team/svc"
ARM_HOST = "tcp://arm64-engine.example:8080"
TEST_CMD = ["python3", "-m", "pytest", "-q", "tests", "--junitxml=/tmp/maci-junit.xml"]
NO_RETRY = Options(cleanup_tmp_tags=False, connect_timeout=5)

CONFIG = f"""
[project]
name = "svc"
image = "{IMAGE}"
platforms = ["linux/amd64", "linux/arm64"]

[[runners]]
name = "default"
engine = "dagger"
platform = "linux/amd64"

[[runners]]
name = "arm"
engine = "dagger"
host = "{ARM_HOST}"
platform = "linux/arm64"
"""


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A tiny service: a Dockerfile with test and runtime stages built FROM ${{BASE}}."""
    return write_tiny_service(tmp_path / "svc")


def spec(ctx: Path, out: Path, platform: str, *, runner: str = "default", host: str = "",
         kind: str = "native", test_target: str | None = "test") -> JobSpec:
    arch = platform.split("/")[1]
    return JobSpec(
        platform=platform,
        placement=Placement(kind=kind, runner=runner, engine="dagger", host=host,  # type: ignore[arg-type]
                            reason="test"),
        project="svc", image=IMAGE, context=str(ctx), dockerfile=str(ctx / "Dockerfile"),
        build_target="runtime", test_target=test_target, test_command=TEST_CMD,
        test_env={"APP_ENV": "ci"}, build_args={"BASE": f"maci/python:bookworm-{arch}"},
        labels={"org.opencontainers.image.revision": "abc123", "dev.maci.platform": platform},
        output_dir=str(out / platform.replace("/", "-")), run_id="run-42",
        source=SourceInfo(sha="abc123", branch="main", run_id="run-42"),
    )


def default_runner() -> RunnerInfo:
    return RunnerInfo(name="default", engine="dagger", reachable=True, native="linux/amd64",
                      emulates=["linux/arm64"])


def run_engine(engine: DaggerEngine, job: JobSpec) -> Any:
    return anyio.run(engine.run_job, job)


def platforms_asked(fake: DaggerFake, token: str) -> set[str]:
    return {c["platform"] for name in ("container", "dockerBuild")
            for c in fake.calls(name, token) if c.get("platform")}


# ------------------------------------------------------------------ one job, session path


def test_dagger_run_session_path_asks_for_the_whole_platform_job(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    env = {**clean_environ(), **dagger_fake.session_env()}
    job = spec(context, tmp_path / "out", "linux/arm64", test_target=None)
    result = run_engine(DaggerEngine(environ=env), job)

    assert result.status == "passed", result.failure
    assert result.engine == "dagger" and result.runner == "default"
    assert result.tests is not None and (result.tests.total, result.tests.passed) == (3, 3)
    assert Path(result.tests.junit_path or "").read_text().startswith("<?xml")
    assert (Path(job.output_dir) / "test.log").is_file()
    # what was asked: platform, base, source mount, pip cache, env, exec args
    assert dagger_fake.calls("container") == [{"platform": "linux/arm64"}]
    assert dagger_fake.calls("from") == [{"address": "maci/python:bookworm-arm64"}]
    assert {"path": "/src"} .items() <= dagger_fake.calls("withMountedDirectory")[0].items()
    assert dagger_fake.calls("directory")[0]["path"] == str(context)
    assert dagger_fake.calls("cacheVolume") == [{"key": "maci-pip-linux-arm64"}]
    assert dagger_fake.calls("withMountedCache")[0]["path"] == "/root/.cache/pip"
    assert {"name": "APP_ENV", "value": "ci"} in dagger_fake.calls("withEnvVariable")
    execs = dagger_fake.calls("withExec")
    assert execs == [{"args": TEST_CMD, "expect": "ANY"}]
    assert dagger_fake.calls("file") == [{"path": "/tmp/maci-junit.xml"}]
    # release image: docker_build for the platform with BASE, labels, push by digest
    (build,) = dagger_fake.calls("dockerBuild")
    assert build == {"platform": "linux/arm64", "target": "runtime",
                     "buildArgs": [{"name": "BASE", "value": "maci/python:bookworm-arm64"}]}
    assert {"name": "dev.maci.platform", "value": "linux/arm64"} in dagger_fake.calls("withLabel")
    (pub,) = dagger_fake.calls("publish")
    assert pub["address"].startswith(f"{IMAGE}:{TMP_TAG_PREFIX}run-42-linux-arm64-")
    ((_, ref),) = dagger_fake.engine.published
    assert result.digest == digest_from_ref(ref) and result.reference == f"{IMAGE}@{result.digest}"
    assert dagger_fake.sessions() == []  # no CLI was started: the session was reused


def test_test_stage_is_built_from_the_dockerfile_when_a_test_target_is_set(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    env = {**clean_environ(), **dagger_fake.session_env()}
    result = run_engine(DaggerEngine(environ=env), spec(context, tmp_path, "linux/amd64"))
    assert result.ok
    targets = [c.get("target") for c in dagger_fake.calls("dockerBuild")]
    assert targets == ["test", "runtime"]
    assert dagger_fake.calls("from") == []
    assert set(result.durations) == {"build_test", "test", "build_release", "push"}


def test_cli_provisioning_path_starts_and_ends_one_session(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**clean_environ(), **dagger_fake.cli_env()}
    for key, value in dagger_fake.cli_env().items():  # the CLI the SDK spawns reads os.environ
        monkeypatch.setenv(key, value)
    result = run_engine(DaggerEngine(environ=env), spec(context, tmp_path, "linux/arm64"))
    assert result.ok
    (session,) = dagger_fake.sessions()
    assert session["runner_host"] == "" and session["argv"][0] == "session"
    assert {d.token for d in dagger_fake.engine.documents} == {session["token"]}
    assert dagger_fake.closed(session["token"])


def test_registry_credentials_go_in_only_as_a_dagger_secret(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    password = "s3cr3t-Registry-pw-7781"
    env = {**clean_environ(), **dagger_fake.session_env(), "MACI_TEST_REG_PW": password}
    creds = Credentials.from_config(cfg.RegistryAuth(username="ci-bot",
                                                     password_env="MACI_TEST_REG_PW"), env)
    result = run_engine(DaggerEngine(environ=env, credentials=creds),
                        spec(context, tmp_path, "linux/amd64"))
    assert result.ok
    assert redact.redact(f"pw={password}") == "pw=***"
    (auth,) = dagger_fake.calls("withRegistryAuth")
    assert auth["address"] == IMAGE and auth["username"] == "ci-bot"
    secret = dagger_fake.engine.objects[auth["secret"]]
    assert secret.chain[0][0] == "setSecret"
    (set_secret,) = dagger_fake.calls("setSecret")
    assert set_secret["name"] == "maci-registry-127.0.0.1-5999"
    # the plaintext crosses only in setSecret (into the engine's secret store), nowhere else
    leaking = [q for q in dagger_fake.queries() if password in q and "setSecret" not in q]
    assert leaking == []
    assert all(password not in str(c) for name in ("withEnvVariable", "withExec", "dockerBuild")
               for c in dagger_fake.calls(name))


# ------------------------------------------------------------------ failures


def test_failed_tests_are_a_failed_result_keeping_exit_code_and_output(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    dagger_fake.fail_exec("pytest", exit_code=1, stdout="F..\n1 failed, 2 passed",
                          stderr="AssertionError: boom")
    env = {**clean_environ(), **dagger_fake.session_env()}
    result = run_engine(DaggerEngine(environ=env), spec(context, tmp_path, "linux/amd64"))
    assert result.status == "failed" and result.digest is None and not result.ok
    assert result.failure is not None and result.failure.step == "test"
    assert result.failure.exit_code == 1
    assert "1 failed, 2 passed" in result.failure.stdout_tail
    assert "AssertionError: boom" in result.failure.stderr_tail
    assert result.tests is not None and result.tests.failed == 1  # read from the JUnit file
    assert dagger_fake.calls("publish") == []  # nothing pushed after failed tests


def test_build_exec_error_becomes_a_failed_step_with_its_output(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    dagger_fake.fail_build("target=runtime", exit_code=2, stderr="E: No matching distribution")
    env = {**clean_environ(), **dagger_fake.session_env()}
    result = run_engine(DaggerEngine(environ=env), spec(context, tmp_path, "linux/amd64"))
    assert result.status == "failed" and result.failure is not None
    assert (result.failure.step, result.failure.exit_code) == ("build_release", 2)
    assert "No matching distribution" in result.failure.stderr_tail
    assert dagger_fake.calls("publish") == []


def test_the_model_check_runs_in_the_release_image_before_the_push(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    """[model] check_command under Dagger, as on Docker: in the built release image, and a
    model its libraries cannot load fails the platform before anything is pushed."""
    check = ["python3", "-c", "import pickle; pickle.load(open('/srv/model/model.pkl', 'rb'))"]
    dagger_fake.fail_exec("pickle.load", platform="linux/arm64", exit_code=1,
                          stderr="ModuleNotFoundError: No module named 'numpy._core'")
    env = {**clean_environ(), **dagger_fake.session_env()}
    engine = DaggerEngine(environ=env)
    amd = spec(context, tmp_path, "linux/amd64").model_copy(update={"model_check": check})
    arm = spec(context, tmp_path, "linux/arm64", kind="emulated").model_copy(
        update={"model_check": check})
    ok, bad = run_engine(engine, amd), run_engine(engine, arm)
    assert ok.status == "passed" and ok.digest, ok.failure
    assert {"args": check} in [{"args": c["args"]} for c in dagger_fake.calls("withExec")]
    assert bad.status == "failed" and bad.digest is None and bad.failure is not None
    assert bad.failure.step == "model_check" and bad.failure.exit_code == 1
    assert "No module named 'numpy._core'" in bad.failure.message
    assert "model_check" in bad.durations and bad.emulated_seconds > 0
    assert len(dagger_fake.calls("publish")) == 1  # only amd64 was pushed


def test_sdk_exec_error_maps_to_tests_failed(dagger_fake: DaggerFake) -> None:
    """A real dagger.ExecError from the SDK keeps exit code, stdout, stderr and the command."""
    import dagger
    from dagger import dag

    dagger_fake.fail_exec("make check", exit_code=3, stdout="partial", stderr="boom")
    env = {**clean_environ(), **dagger_fake.session_env()}

    async def go() -> BaseException:
        async with ds.connect(env, connect_timeout=5):
            try:
                await dag.container().from_("alpine").with_exec(["make", "check"]).sync()
            except dagger.ExecError as exc:
                return exc
        raise AssertionError("no ExecError")

    exc = anyio.run(go)
    mapped = ds.step_failed(exc, "test", "linux/amd64")  # type: ignore[arg-type]
    assert isinstance(mapped, TestsFailed) and mapped.exit_code == 1  # the CLI's exit code
    assert (mapped.returncode, mapped.stdout, mapped.stderr) == (3, "partial", "boom")
    assert mapped.cmd == ["make", "check"] and "exit 3" in mapped.message
    build = ds.step_failed(exc, "build_release", "linux/amd64")  # type: ignore[arg-type]
    assert type(build) is StepFailed and build.returncode == 3


# ------------------------------------------------------------------ routing


def test_arm64_goes_to_its_runner_host_and_amd64_to_the_default_engine(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    dagger_fake.engine.default_platforms = {ARM_HOST: "linux/arm64"}  # what that engine is
    env = {**clean_environ(), **dagger_fake.cli_env()}
    config = cfg.loads(CONFIG, root=str(tmp_path))
    runners = inventory.discover(plan.runners_for(config, "dagger"), env)
    the_plan = plan.make_plan(config, runners)
    specs = [spec(context, tmp_path / "out", j.platform, runner=j.placement.runner or "",
                  host=j.placement.host, kind=j.placement.kind) for j in the_plan.jobs]
    assert [(s.platform, s.placement.kind, s.placement.runner, s.placement.host)
            for s in specs] == [("linux/amd64", "native", "default", ""),
                                ("linux/arm64", "native", "arm", ARM_HOST)]
    probes = {s["token"] for s in dagger_fake.sessions()}  # plan time: defaultPlatform asked
    assert len(probes) == 2

    results = anyio.run(lambda: run_jobs_dagger(specs, runners, env, options=NO_RETRY))

    assert [(r.platform, r.runner, r.status) for r in results] == [
        ("linux/amd64", "default", "passed"), ("linux/arm64", "arm", "passed")]
    sessions = {s["runner_host"]: s for s in dagger_fake.sessions() if s["token"] not in probes}
    assert set(sessions) == {"", ARM_HOST}  # one session per runner host, each saw its host
    assert "DAGGER_SESSION_PORT" not in sessions[ARM_HOST]["env"]
    assert platforms_asked(dagger_fake, sessions[ARM_HOST]["token"]) == {"linux/arm64"}
    assert platforms_asked(dagger_fake, sessions[""]["token"]) == {"linux/amd64"}
    assert sessions[ARM_HOST]["ppid"] != sessions[""]["ppid"]  # two child processes
    assert all(dagger_fake.closed(s["token"]) for s in sessions.values())  # sessions ended
    # each session pushed its own platform; publish receives BOTH digests
    pushed = {tok: digest_from_ref(ref) for tok, ref in dagger_fake.engine.published}
    assert {r.digest for r in results} == set(pushed.values()) and len(pushed) == 2
    assert permit_for(results, ["linux/amd64", "linux/arm64"], IMAGE).verdict.passed
    assert {r.platform: r.digest for r in results} == {
        "linux/amd64": pushed[sessions[""]["token"]],
        "linux/arm64": pushed[sessions[ARM_HOST]["token"]]}


def test_merge_refuses_when_the_arm64_runner_failed(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    dagger_fake.fail_exec("pytest", platform="linux/arm64", stderr="arm64 only bug")
    env = {**clean_environ(), **dagger_fake.cli_env()}
    runners = [default_runner(), RunnerInfo(name="arm", engine="dagger", host=ARM_HOST,
                                            reachable=True, native="linux/arm64")]
    specs = [spec(context, tmp_path, "linux/amd64"),
             spec(context, tmp_path, "linux/arm64", runner="arm", host=ARM_HOST)]
    results = anyio.run(lambda: run_jobs_dagger(specs, runners, env, options=NO_RETRY))
    assert [r.status for r in results] == ["passed", "failed"]
    with pytest.raises(GateFailed, match=r"nothing published.*linux/arm64"):
        permit_for(results, ["linux/amd64", "linux/arm64"], IMAGE)


def test_platform_without_native_runner_is_emulated_on_the_default_engine(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    env = {**clean_environ(), **dagger_fake.session_env()}
    config = cfg.loads(CONFIG.split("[[runners]]")[0] + '[[runners]]\nname = "default"\n'
                       'engine = "dagger"\nplatform = "linux/amd64"\n', root=str(tmp_path))
    runners = inventory.discover(plan.runners_for(config, "dagger"), env)
    the_plan = plan.make_plan(config, runners)
    assert [j.placement.kind for j in the_plan.jobs] == ["native", "emulated"]
    specs = [spec(context, tmp_path, j.platform, kind=j.placement.kind) for j in the_plan.jobs]
    results = anyio.run(lambda: run_jobs_dagger(specs, runners, env, options=NO_RETRY))
    assert [(r.placement, r.status) for r in results] == [("native", "passed"),
                                                          ("emulated", "passed")]
    assert results[1].emulated_seconds > 0 and results[0].emulated_seconds == 0
    token = dagger_fake.server.token  # the `dagger run` session, reused by the one child
    assert {d.token for d in dagger_fake.engine.documents} == {token}
    assert platforms_asked(dagger_fake, token) == {"linux/amd64", "linux/arm64"}
    with pytest.raises(PlanUnavailable):
        group_by_runner([(0, specs[0].model_copy(update={"placement": Placement(
            kind="unavailable", reason="fallback is 'fail'")}))], runners)


def test_single_engine_publishes_the_multi_platform_image_in_one_call(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    env = {**clean_environ(), **dagger_fake.cli_env()}
    specs = [spec(context, tmp_path, "linux/amd64"),
             spec(context, tmp_path, "linux/arm64", kind="emulated")]
    results, index = anyio.run(lambda: run_single_engine_dagger(specs, env, options=NO_RETRY))
    assert all(r.ok for r in results) and index is not None
    (session,) = dagger_fake.sessions()
    assert session["runner_host"] == ""
    multi = [c for c in dagger_fake.calls("publish") if c.get("platformVariants")]
    assert len(multi) == 1 and multi[0]["address"].startswith(f"{IMAGE}:{TMP_TAG_PREFIX}")
    (variant_id,) = multi[0]["platformVariants"]
    variant = dagger_fake.engine.objects[variant_id]
    assert dagger_fake.engine.evaluate(variant).platform == "linux/arm64"
    assert index.startswith(multi[0]["address"] + "@sha256:")


def test_child_engine_serves_the_engine_port_for_fanout(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    from ci.adapters.engines.dagger_routing import DaggerChildEngine
    from ci.stages.fanout import run_jobs

    env = {**clean_environ(), **dagger_fake.session_env()}
    engine = DaggerChildEngine([default_runner()], env, NO_RETRY)
    results = anyio.run(lambda: run_jobs([spec(context, tmp_path, "linux/amd64")],
                                         lambda _s: engine, {"default": 1}))
    assert [(r.platform, r.engine, r.status) for r in results] == [
        ("linux/amd64", "dagger", "passed")]
    assert dagger_fake.calls("container") == [] and len(dagger_fake.calls("publish")) == 1


# ------------------------------------------------------------------ no engine / bad engine


def test_no_engine_fails_fast_with_one_clear_line(tmp_path: Path, context: Path) -> None:
    env = {**clean_environ(), "PATH": str(tmp_path / "empty-bin")}
    started = time.monotonic()
    with pytest.raises(EngineUnreachable) as info:
        anyio.run(lambda: run_jobs_dagger([spec(context, tmp_path, "linux/amd64")],
                                          [default_runner()], env))
    assert time.monotonic() - started < 2
    assert info.value.exit_code == 1 and "\n" not in info.value.message
    assert "no Dagger engine reachable" in info.value.message
    assert "dagger run" in info.value.message and "no `dagger` CLI on PATH" in info.value.message


def test_dead_session_and_refusing_runner_fail_within_seconds(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    from tests.fixtures.procs import free_port

    dead = {**clean_environ(), "DAGGER_SESSION_PORT": str(free_port()),
            "DAGGER_SESSION_TOKEN": "x"}
    started = time.monotonic()
    with pytest.raises(EngineUnreachable, match="Dagger engine unreachable"):
        run_engine(DaggerEngine(environ=dead, connect_timeout=3),
                   spec(context, tmp_path, "linux/amd64"))
    assert time.monotonic() - started < 10
    # the failed connect left the SDK's shared connection clean: the next one in this process works
    good = {**clean_environ(), **dagger_fake.session_env()}
    assert run_engine(DaggerEngine(environ=good), spec(context, tmp_path, "linux/amd64")).ok
    env = {**clean_environ(), **dagger_fake.cli_env(), "MACI_DAGGER_FAKE_UNREACHABLE": ARM_HOST}
    runners = [RunnerInfo(name="arm", engine="dagger", host=ARM_HOST, reachable=True,
                          native="linux/arm64")]
    job = spec(context, tmp_path, "linux/arm64", runner="arm", host=ARM_HOST)
    with pytest.raises(EngineUnreachable, match=rf"runner host {re.escape(ARM_HOST)}.*Dagger engine session"):
        anyio.run(lambda: run_jobs_dagger([job], runners, env, options=NO_RETRY))


def test_a_runner_host_that_never_answers_is_cut_off_by_the_connect_timeout(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    env = {**clean_environ(), **dagger_fake.cli_env(), "MACI_DAGGER_FAKE_HANG": ARM_HOST}
    runners = [RunnerInfo(name="arm", engine="dagger", host=ARM_HOST, reachable=True,
                          native="linux/arm64")]
    job = spec(context, tmp_path, "linux/arm64", runner="arm", host=ARM_HOST)
    started = time.monotonic()
    with pytest.raises(EngineUnreachable, match=r"no session within 1 s"):
        anyio.run(lambda: run_jobs_dagger([job], runners, env, options=Options(
            cleanup_tmp_tags=False, connect_timeout=1)))
    assert time.monotonic() - started < 15
    (session,) = dagger_fake.sessions()
    assert session["runner_host"] == ARM_HOST
    wait_until(lambda: dagger_fake.closed(session["token"]), 10, "fake CLI exit")


def test_unreachable_runner_host_falls_back_to_emulation_on_the_default_engine(
    dagger_fake: DaggerFake, context: Path, tmp_path: Path
) -> None:
    from ci.core.placement import qemu_fallback

    env = {**clean_environ(), **dagger_fake.cli_env(), "MACI_DAGGER_FAKE_UNREACHABLE": ARM_HOST}
    runners = [default_runner(), RunnerInfo(name="arm", engine="dagger", host=ARM_HOST,
                                            reachable=True, native="linux/arm64")]
    specs = [spec(context, tmp_path, "linux/amd64"),
             spec(context, tmp_path, "linux/arm64", runner="arm", host=ARM_HOST)]
    results = anyio.run(lambda: run_jobs_dagger(specs, runners, env, options=NO_RETRY,
                                                replace=qemu_fallback(runners, "qemu")))
    assert [(r.runner, r.placement, r.status) for r in results] == [
        ("default", "native", "passed"), ("default", "emulated", "passed")]
    assert "unreachable at run time" in results[1].placement_reason


# ------------------------------------------------------------------ the fake itself, pure bits


def test_the_fake_rejects_documents_that_do_not_match_the_schema(dagger_fake: DaggerFake) -> None:
    url = f"http://127.0.0.1:{dagger_fake.server.port}/query"
    query = '{ loadContainerFromID(id: "Container:x") { id } }'
    resp = httpx.post(url, json={"query": query}, auth=(dagger_fake.server.token, ""))
    assert "invalid document" in resp.json()["errors"][0]["message"]
    assert httpx.post(url, json={"query": "{ version }"}, auth=("wrong", "")).status_code == 401
    assert len(dagger_fake.engine.invalid) == 1
    dagger_fake.engine.invalid.clear()  # expected here; any other invalid document fails a test


def test_pure_helpers() -> None:
    job = JobSpec(platform="linux/arm/v7", placement=Placement(kind="native"), project="p",
                  image=IMAGE, context="/c", dockerfile="/c/Dockerfile", test_command=["t"],
                  output_dir="/tmp/x", run_id="gh 123/4")
    tag = temp_tag(job)
    assert tag.startswith("maci-tmp-gh-123-4-linux-arm-v7-") and len(tag) <= 128
    assert digest_from_ref(f"{IMAGE}:t@sha256:{'a' * 64}") == f"sha256:{'a' * 64}"
    with pytest.raises(Exception, match="no digest"):
        digest_from_ref(f"{IMAGE}:t")
    err = error_from(ChildError(kind="EngineUnreachable", message="down"))
    assert isinstance(err, EngineUnreachable) and err.message == "down"
    assert type(error_from({"kind": "os.system", "message": "x"})).__name__ == "EngineError"
    routed = ds.sdk_environ({"DAGGER_SESSION_PORT": "1", "DAGGER_SESSION_TOKEN": "t",
                             "PATH": os.defpath}, ARM_HOST)
    assert routed[ds.RUNNER_VAR] == ARM_HOST and "DAGGER_SESSION_PORT" not in routed
