"""Transient failures on the push and MLflow paths are retried, visibly and boundedly.

The fault proxy (tests/fixtures/faultproxy.py) sits between the client (the Docker daemon,
MLflow's client) and the real registry or MLflow server and breaks chosen requests.

What Docker 20.10 itself does (measured here): the daemon retries a failed LAYER upload
(5xx, reset) on its own, 5 s later ("Retrying in 5 seconds"); it does not retry the config
blob, the manifest PUT, a 429 or a refused/reset connection to /v2/ — those failed the whole
`docker push`, which is what `push_by_digest` now retries.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci.adapters import retry, tracking
from ci.adapters.engines.docker import DockerEngine
from ci.adapters.registry import RegistryClient
from ci.core import config as cfg
from ci.core.errors import EngineError, StepFailed, TrackingError
from ci.core.oci import ACCEPT
from ci.core.plan import Placement
from ci.core.results import JobSpec
from tests.fixtures.faultproxy import ALWAYS, FaultProxy
from tests.fixtures.procs import require, require_tool
from tests.fixtures.registry import Registry
from tests.fixtures.sampleapp import remove_local_images

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BLOB_PUT = r"^/v2/.+/blobs/uploads/[^/]+$"  # the commit of one blob upload
MANIFEST_PUT = r"^/v2/.+/manifests/maci-tmp-"
FAST = {"MACI_RETRY_WAIT_INITIAL": "0.2", "MACI_RETRY_WAIT_MAX": "1"}


def measure(text: str) -> None:
    print(f"\n[measure] {text}")


# ------------------------------------------------------------------ docker push


@pytest.fixture(scope="module")
def docker_up() -> None:
    require_tool("docker")
    up = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0
    require(up and subprocess.run(["docker", "info"], capture_output=True).returncode == 0,
            "no Docker daemon with buildx answers (run scripts/setup-stack.sh)")


@dataclass
class Push:
    """A one-layer image built FROM scratch (no base image, no network), ready to push."""

    engine: DockerEngine
    spec: JobSpec
    image_id: str
    repo: str
    out: Path

    def __call__(self) -> str:
        return self.engine.push_by_digest(self.spec, self.image_id, self.out)

    def retry_lines(self, caplog: pytest.LogCaptureFixture) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "ci.adapters.retry"]


def make_push(proxy: FaultProxy, tmp_path: Path, environ: dict[str, str]) -> Push:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY nonce /nonce\n")
    (ctx / "nonce").write_text(secrets.token_hex(16))  # a new layer: a real upload each time
    repo = f"it/retry-{secrets.token_hex(3)}"
    spec = JobSpec(platform="linux/amd64", placement=Placement(kind="native", runner="local"),
                   project="retry", image=f"{proxy.host}/{repo}", context=str(ctx),
                   dockerfile=str(ctx / "Dockerfile"), test_command=["true"],
                   output_dir=str(tmp_path / "out"), run_id=f"retry-{secrets.token_hex(2)}")
    out = Path(spec.output_dir)
    out.mkdir()
    engine = DockerEngine(registry=RegistryClient(proxy.host), environ={**os.environ, **environ})
    image_id = engine.build(spec, target=None, step="build_release", labels=False,
                            iidfile=out / "release.iid", tag=f"{spec.image}:maci-linux-amd64",
                            log_path=out / "build.log")
    return Push(engine, spec, image_id, repo, out)


@pytest.fixture
def push(docker_up: None, faulty_registry: FaultProxy, tmp_path: Path) -> Iterator[Push]:
    job = make_push(faulty_registry, tmp_path, FAST)
    yield job
    remove_local_images(job.spec.image)


def in_registry(registry: Registry, repo: str, digest: str) -> bool:
    status, _ = registry.get(f"/v2/{repo}/manifests/{digest}", accept=ACCEPT)
    return status == 200


def breaks(proxy: FaultProxy, kind: str) -> str:
    """Arm one fault on `proxy`; returns the reason the retry line must name."""
    if kind == "500 on the config blob upload":
        proxy.fail("PUT", BLOB_PUT, 500, nth=2)  # 1st PUT: the layer, 2nd: the image config
        return "HTTP 500"
    if kind == "429 with Retry-After on the manifest":
        proxy.fail("PUT", MANIFEST_PUT, 429, retry_after="1")
        return "HTTP 429"
    if kind == "reset on the manifest":
        proxy.reset("PUT", MANIFEST_PUT)
        return "connection reset"
    if kind == "reset on /v2/":
        proxy.reset("GET", r"^/v2/$")
        return "connection reset"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["500 on the config blob upload",
                                  "429 with Retry-After on the manifest",
                                  "reset on the manifest", "reset on /v2/"])
def test_one_transient_failure_is_retried_and_the_push_lands(
    push: Push, faulty_registry: FaultProxy, registry: Registry,
    caplog: pytest.LogCaptureFixture, kind: str,
) -> None:
    reason = breaks(faulty_registry, kind)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "ci.adapters.retry"):
        digest = push()
    seconds = time.monotonic() - started
    lines = push.retry_lines(caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"push linux/amd64: attempt 2/4 after {reason} (retrying in ")
    assert in_registry(registry, push.repo, digest)
    assert registry.tags(push.repo) == []  # the temporary tag is gone again
    log = (push.out / "push.log").read_text()
    assert "--- attempt 2 ---" in log and f"digest: {digest}" in log.split("--- attempt 2 ---")[1]
    faults = [s for s in faulty_registry.seen() if s.outcome in (500, 429, "reset")]
    assert len(faults) == 1
    measure(f"push with one {kind}: {seconds:.2f} s ({lines[0]})")


def test_a_layer_upload_500_is_retried_by_the_docker_daemon_itself(
    push: Push, faulty_registry: FaultProxy, registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faulty_registry.fail("PUT", BLOB_PUT, 500)  # the first blob commit: the layer
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "ci.adapters.retry"):
        digest = push()
    seconds = time.monotonic() - started
    assert push.retry_lines(caplog) == []  # one `docker push`: the daemon retried the layer
    assert "Retrying in 5 seconds" in (push.out / "push.log").read_text()
    assert in_registry(registry, push.repo, digest)
    measure(f"push with a 500 on the layer upload (dockerd's own 5 s retry): {seconds:.2f} s")


def test_a_registry_restart_is_ridden_out(
    push: Push, faulty_registry: FaultProxy, registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faulty_registry.stop()  # connection refused, as while a registry restarts
    threading.Timer(0.5, faulty_registry.start).start()
    with caplog.at_level(logging.WARNING, "ci.adapters.retry"):
        digest = push()
    lines = push.retry_lines(caplog)
    assert lines and all("after connection refused" in line for line in lines), lines
    assert in_registry(registry, push.repo, digest)


def test_a_push_failing_on_every_attempt_gives_up_within_bounds(
    docker_up: None, faulty_registry: FaultProxy, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = make_push(faulty_registry, tmp_path, {})  # the default policy: 4 attempts, 1/2/4 s
    faulty_registry.fail("PUT", BLOB_PUT, 500, nth=2, times=ALWAYS)
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, "ci.adapters.retry"), \
                pytest.raises(EngineError) as err:
            job()
    finally:
        remove_local_images(job.spec.image)
    seconds = time.monotonic() - started
    assert err.value.message == (
        "push linux/amd64 failed after 4 attempts (last: HTTP 500): "
        "received unexpected HTTP status: 500 Internal Server Error")
    assert [line.split(" (retrying")[0] for line in job.retry_lines(caplog)] == [
        f"push linux/amd64: attempt {n}/4 after HTTP 500" for n in (2, 3, 4)]
    assert len(faulty_registry.seen("PUT", BLOB_PUT)) == 5  # the layer once, the config 4 times
    assert len([s for s in faulty_registry.seen() if s.outcome == 500]) == 4
    bound = retry.Policy().worst_case_wait()
    assert 7 <= seconds < bound + 15
    assert (job.out / "push.log").read_text().count("500 Internal Server Error") == 4
    measure(f"push that keeps getting HTTP 500 gave up after 4 attempts in {seconds:.2f} s "
            f"(waits <= {bound:.2f} s)")


@pytest.mark.parametrize(("status", "says"), [(403, "denied"), (401, "unauthorized")])
def test_denied_or_unauthorized_is_not_retried(
    push: Push, faulty_registry: FaultProxy, caplog: pytest.LogCaptureFixture,
    status: int, says: str,
) -> None:
    faulty_registry.fail("POST", r"/blobs/uploads/$", status, times=ALWAYS)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "ci.adapters.retry"), pytest.raises(StepFailed) as err:
        push()
    assert says in err.value.stderr.lower()
    assert push.retry_lines(caplog) == []
    assert len(faulty_registry.seen("POST", r"/blobs/uploads/$")) == 1  # one attempt
    assert time.monotonic() - started < 10


# ------------------------------------------------------------------ MLflow


def conf(tmp_path: Path, uri: str) -> cfg.Config:
    data = {"project": {"name": "p", "image": "127.0.0.1:5000/p"},
            "model": {"train_command": ["python", "t.py"], "registered_model": "m"},
            "mlflow": {"tracking_uri": uri}}
    return cfg.validate(data, "ci.toml", str(tmp_path))


@pytest.fixture
def mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter's own HTTP defaults (not whatever an earlier test or the shell set)."""
    for key in tracking.HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    for key in (retry.ATTEMPTS_ENV, retry.WAIT_INITIAL_ENV, retry.WAIT_MAX_ENV):
        monkeypatch.delenv(key, raising=False)


def mlflow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name in ("ci.adapters.tracking", "ci.adapters.retry")]


CALLS = {
    "create run": ("POST", r"/runs/create$"),
    "log params": ("POST", r"/runs/log-batch$"),
    "log artifact": ("PUT", r"/mlflow-artifacts/artifacts/"),
    "search runs": ("POST", r"/runs/search$"),
    "register model": ("POST", r"/registered-models/create$"),
    "set alias": ("POST", r"/registered-models/alias$"),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("fault", ["503", "429 with Retry-After: 3600", "reset"])
def test_a_tracking_call_survives_one_transient_failure(
    tmp_path: Path, faulty_mlflow: FaultProxy, mlflow_env: None,
    caplog: pytest.LogCaptureFixture, call: str, fault: str,
) -> None:
    client = tracking.connect(conf(tmp_path, faulty_mlflow.url))
    exp = client.experiment_id("retries-it")
    name = f"retry-{secrets.token_hex(4)}"
    run_id = client.create_run(exp, {"retry": fault}, "r") if call != "create run" else ""
    method, path = CALLS[call]
    if fault == "503":
        faulty_mlflow.fail(method, path, 503)
    elif fault == "reset":
        faulty_mlflow.reset(method, path)
    else:  # not honoured (bounded), so this must not take an hour
        faulty_mlflow.fail(method, path, 429, retry_after="3600")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        if call == "create run":
            assert client.create_run(exp, {}, "r")
        elif call == "log params":
            client.log_params(run_id, {"seed": 1})
        elif call == "log artifact":
            client.log_text(run_id, "hello", "notes/hello.txt")
        elif call == "search runs":
            assert client.find_runs(exp, {"retry": fault}, status="RUNNING")
        elif call == "register model":
            client.client.create_registered_model(name)
        else:
            client.client.create_registered_model(name)
            source = client.run(run_id).artifact_uri
            version = client.client.create_model_version(name, source, run_id=run_id).version
            client.set_alias(name, "champion", str(version))
            assert client.version_by_alias(name, "champion") is not None
    seconds = time.monotonic() - started
    reason = {"503": "HTTP 503", "reset": "connection reset"}.get(fault, "HTTP 429")
    lines = [line for line in mlflow_lines(caplog) if "attempt 2/3" in line]
    assert len(lines) == 1, mlflow_lines(caplog)
    assert lines[0].startswith(f"MLflow {method} /") and f"after {reason} (retrying" in lines[0]
    assert len(faulty_mlflow.seen(method, path)) >= 2
    assert seconds < 10
    if call == "create run":
        measure(f"MLflow {call} with one {fault}: {seconds:.2f} s ({lines[0]})")


def test_a_tracking_server_that_stays_down_fails_within_bounds(
    tmp_path: Path, faulty_mlflow: FaultProxy, mlflow_env: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = tracking.connect(conf(tmp_path, faulty_mlflow.url))
    exp = client.experiment_id("retries-it")
    faulty_mlflow.down(503)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(TrackingError) as err:
        client.create_run(exp, {}, "r")
    seconds = time.monotonic() - started
    assert "create run failed after 3 attempts (last: HTTP 503): " in err.value.message
    assert [line.split(": ")[1].split(" (")[0] for line in mlflow_lines(caplog)] == [
        "attempt 2/3 after HTTP 503", "attempt 3/3 after HTTP 503"]
    assert len(faulty_mlflow.seen("POST", r"/runs/create$")) == 3
    assert 2 <= seconds < 5
    measure(f"MLflow create run against a server answering 503: TrackingError after "
            f"{seconds:.2f} s")

    faulty_mlflow.stop()  # now nothing listens: connection refused
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(TrackingError) as err:
        client.log_params("0" * 32, {"a": 1})
    seconds = time.monotonic() - started
    assert "log params failed after 3 attempts (last: connection refused): " in err.value.message
    assert mlflow_lines(caplog)[-1].split(" (")[0].endswith("attempt 3/3 after connection refused")
    assert 2 <= seconds < 5
    measure(f"MLflow log params against a stopped server: TrackingError after {seconds:.2f} s")


def test_connect_rides_out_a_restart_but_fails_fast_on_a_dead_server(
    tmp_path: Path, faulty_mlflow: FaultProxy, mlflow_env: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faulty_mlflow.stop()
    threading.Timer(0.4, faulty_mlflow.start).start()
    with caplog.at_level(logging.WARNING, "ci.adapters.retry"):
        client = tracking.connect(conf(tmp_path, faulty_mlflow.url))
    assert client.experiment_id("retries-it")
    lines = mlflow_lines(caplog)
    assert lines and lines[0].startswith(f"MLflow health check at {faulty_mlflow.url}: attempt 2/4 "
                                         "after connection refused (retrying in 0.")

    faulty_mlflow.stop()
    caplog.clear()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "ci.adapters.retry"), \
            pytest.raises(TrackingError) as err:
        tracking.connect(conf(tmp_path, faulty_mlflow.url))
    seconds = time.monotonic() - started
    assert err.value.message.startswith(
        f"MLflow health check at {faulty_mlflow.url} failed after 4 attempts "
        "(last: connection refused)")
    assert "unreachable" in err.value.message
    assert len(mlflow_lines(caplog)) == 3
    assert seconds < 4
    measure(f"connect to a dead MLflow server: TrackingError after {seconds:.2f} s")


def test_a_health_check_that_answers_an_error_is_not_retried(
    tmp_path: Path, faulty_mlflow: FaultProxy, mlflow_env: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    faulty_mlflow.fail("GET", r"^/health$", 404, times=ALWAYS)
    with caplog.at_level(logging.WARNING), pytest.raises(TrackingError, match=r"HTTP 404"):
        tracking.connect(conf(tmp_path, faulty_mlflow.url))
    assert len(faulty_mlflow.seen("GET", r"^/health$")) == 1
    assert mlflow_lines(caplog) == []
