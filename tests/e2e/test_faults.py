"""Faults after the gates passed, on the real stack: signals at named points, a killed deploy,
two runs at once, an older commit finishing late. After each, the world is either unchanged
or completed by the next run on the SAME index digest (registry API, git, MLflow's store)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_release import (
    GIT,
    Project,
    copy_example,
    head,
    tag_digest,
)
from tests.fixtures.mlflow_server import MlflowServer
from tests.fixtures.registry import TAG_PUT, FaultProxy, Registry, fault_proxy_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(docker_stack: None, registry: Registry, registry_proxy: FaultProxy,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    registry_proxy.clear()
    path = copy_example(tmp_path_factory.mktemp("faults") / "wine",
                        f"{registry_proxy.host}/faults/wine")
    found = Project(path, "faults/wine", registry, registry_proxy)
    proc = found.run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield found
    registry_proxy.clear()


def start(project: Project, *args: str, **extra: str) -> subprocess.Popen[str]:
    """`ci run` in its own process group (as a runner starts a job)."""
    return subprocess.Popen([sys.executable, "-m", "ci", "run", "release", *args],
                            cwd=project.path, env=project.env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[str],
             timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"ci ended (exit {proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def deployed(project: Project, key: str = "index_digest") -> str:
    """A field of the deploy branch's guard record (what Argo CD now runs)."""
    show = subprocess.run(["git", "-C", str(project.deploy_remote), "show",
                           "HEAD:.maci/deployed.json"], capture_output=True, text=True, check=True)
    return str(json.loads(show.stdout)[key])


def released_revision(project: Project) -> str:
    """The source commit the `main` tag's index says it was built from."""
    status, body = project.registry.get(f"/v2/{project.repo}/manifests/main",
                                        accept="application/vnd.oci.image.index.v1+json")
    assert status == 200, body
    return str(json.loads(body)["annotations"]["org.opencontainers.image.revision"])


def leftover_containers() -> list[str]:
    return subprocess.run(["docker", "ps", "-a", "--filter", "name=maci-", "--format",
                           "{{.Names}}"], capture_output=True, text=True, check=True).stdout.split()


def test_sigterm_during_tag_writes_moves_every_tag_and_the_rerun_finishes(project: Project) -> None:
    before = project.world()
    sha = project.commit("sigterm in publish")
    slow = project.proxy.fail("PUT", TAG_PUT, status=0, delay=1.5)  # a slow registry
    try:
        proc = start(project)
        wait_for("the first tag write", lambda: slow.seen >= 1, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        project.proxy.reset()
    assert proc.returncode == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM: release sha256:"), err[-2000:]
    assert "moved; not done: deploy, promote v" in last and "the next `ci run` finishes it" in last
    world = project.world()
    digest = world["tags"]["latest"]
    assert digest != before["tags"]["latest"]
    for tag in (f"sha-{sha[:7]}", "main", "latest"):  # no half release: all three or none
        assert world["tags"][tag] == digest, tag
    assert world["deploy_head"] == before["deploy_head"] and world["alias"] == before["alias"]

    rerun = project.run()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "finish unfinished release" in rerun.stderr
    after = project.world()
    assert after["tags"]["latest"] == after["tags"]["main"] == digest  # the same index
    assert deployed(project) == digest
    assert after["alias"] == deployed(project, "model_version")  # promoted what was deployed
    assert not (project.path / ".maci" / "journal.json").exists()


def test_sigkill_during_the_deploy_push_is_finished_by_the_rerun(project: Project) -> None:
    before = project.world()
    project.commit("sigkill in deploy")
    hook = project.deploy_remote / "hooks" / "pre-receive"
    marker = project.deploy_remote / "pushing"
    hook.write_text(f'#!/bin/sh\ntouch "{marker}"\nsleep 120\n')
    hook.chmod(0o755)
    try:
        proc = start(project)
        wait_for("the deploy push", marker.exists, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the runner kills the whole job
        proc.wait(timeout=30)
    finally:
        hook.unlink()
        marker.unlink(missing_ok=True)
    world = project.world()
    digest = world["tags"]["latest"]
    assert digest != before["tags"]["latest"] and world["tags"]["main"] == digest
    assert world["deploy_head"] == before["deploy_head"]  # the push never landed
    assert world["alias"] == before["alias"]
    left = json.loads((project.path / ".maci" / "journal.json").read_text())
    assert left["phase"] == "published" and left["index_digest"] == digest

    rerun = project.run()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = project.world()
    assert after["tags"]["latest"] == digest and deployed(project) == digest
    log = subprocess.run(["git", "-C", str(project.deploy_remote), "rev-list", "--count",
                          f"{before['deploy_head']}..HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert log == "1"  # one rollout for this release, not two
    assert after["alias"] == deployed(project, "model_version")


def test_a_second_run_is_refused_while_one_runs_and_sigterm_cleans_up(project: Project) -> None:
    before = project.world()
    project.commit("two at once")
    lock = project.path / ".maci" / "release.lock"
    first = start(project, MACI_TEST__COMMAND='["sleep", "120"]')
    try:
        wait_for("the lock", lambda: lock.exists() and lock.stat().st_size > 0, first)
        second = project.run(MACI_LOCK_TIMEOUT="0", timeout=120)
        assert second.returncode == 1, second.stderr[-2000:]
        assert "is running: `ci run` since" in second.stderr
        assert f"(pid {first.pid} on " in second.stderr
        wait_for("the test containers", lambda: bool(leftover_containers()), first, timeout=300)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted by SIGTERM: nothing was published"
    assert project.world() == before
    assert leftover_containers() == []


def test_an_older_commit_finishing_late_never_moves_tags_back(project: Project,
                                                             tmp_path: Path) -> None:
    released = released_revision(project)
    parents = subprocess.run(["git", "-C", str(project.path), "rev-list", "--count", released],
                             capture_output=True, text=True, check=True).stdout.strip()
    if parents == "1":  # run alone: release a second commit first
        project.commit("newer")
        assert project.run().returncode == 0
        released = released_revision(project)
    newest = project.world()["tags"]
    older = tmp_path / "older"
    subprocess.run([*GIT, "clone", "-q", str(project.path), str(older)], check=True)
    subprocess.run([*GIT, "-C", str(older), "reset", "-q", "--hard", f"{released}~1"], check=True)
    old_sha = head(older)
    shutil.copytree(project.path / "model", older / "model")  # the registered model, materialized
    proc = subprocess.run([sys.executable, "-m", "ci", "build", "--json"], cwd=older,
                          env=project.env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tags = {t: tag_digest(project.registry, project.repo, t)
            for t in project.registry.tags(project.repo)}
    assert tags["main"] == newest["main"] and tags["latest"] == newest["latest"]
    assert tags[f"sha-{old_sha[:7]}"] != newest["main"]  # its own sha tag is published
    data = json.loads(proc.stdout)
    kept = data["publish"]["kept"]
    assert set(kept) == {"main", "latest"}, data["publish"]
    assert "kept on the newer source" in kept["main"]


def champion(server: MlflowServer, model: str) -> str | None:
    """The alias straight from the server (not through the proxy)."""
    query = urllib.parse.urlencode({"name": model, "alias": "champion"})
    try:
        with urllib.request.urlopen(
                f"{server.uri}/api/2.0/mlflow/registered-models/alias?{query}", timeout=10) as r:
            return str(json.load(r)["model_version"]["version"])
    except urllib.error.HTTPError as exc:
        if exc.code in (400, 404):  # no such model / alias (MLflow answers either)
            return None
        raise


def test_mlflow_down_at_promote_is_finished_by_the_rerun(project: Project,
                                                         mlflow_server: MlflowServer) -> None:
    """The deploy landed, then MLflow failed: exit 1 naming the promote, and the rerun
    promotes that same version without a second deploy commit."""
    model = "faults-wine-promote"
    with fault_proxy_for(mlflow_server.port) as mlflow:
        uri = f"http://{mlflow.host}"
        project.commit("mlflow down at promote")
        mlflow.fail("POST", r"/registered-models/alias$", status=503)
        started = time.monotonic()
        proc = project.run(MACI_MLFLOW__TRACKING_URI=uri, MACI_MODEL__REGISTERED_MODEL=model)
        took = time.monotonic() - started
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "promote" in proc.stderr.strip().splitlines()[-1], proc.stderr[-2000:]
        left = json.loads((project.path / ".maci" / "journal.json").read_text())
        assert left["phase"] == "deployed" and left["failure"].startswith("promote: ")
        assert deployed(project) == left["index_digest"]  # the rollout happened
        assert champion(mlflow_server, model) is None
        deploy_head = head(project.deploy_remote)
        mlflow.reset()

        rerun = project.run(MACI_MLFLOW__TRACKING_URI=uri, MACI_MODEL__REGISTERED_MODEL=model)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert "finish unfinished release" in rerun.stderr
    assert champion(mlflow_server, model) == left["model_version"]
    assert head(project.deploy_remote) == deploy_head  # up to date: no second rollout
    assert took < 240, took  # a down MLflow fails within a bounded time
