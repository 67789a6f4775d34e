"""ci.adapters.retry: which tool output is transient, the backoff policy, and `call`/`logged`.

The docker stderr samples are what Docker 20.10 printed against the fault proxy
(tests/fixtures/faultproxy.py) in front of a real registry.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from ci.adapters import proc, retry
from ci.core.errors import ConfigError, EngineError, StepFailed

TRANSIENT = [
    ("received unexpected HTTP status: 500 Internal Server Error", "HTTP 500"),
    ("received unexpected HTTP status: 502 Bad Gateway", "HTTP 502"),
    ("toomanyrequests: injected HTTP 429", "HTTP 429"),
    ("toomanyrequests: You have reached your pull rate limit.", "HTTP 429"),
    ('Get "http://127.0.0.1:39833/v2/": read tcp 127.0.0.1:42974->127.0.0.1:39833: read: '
     "connection reset by peer", "connection reset"),
    ('Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
     "connection refused"),
    ('Put "http://127.0.0.1:5000/v2/a/blobs/uploads/x?digest=sha256:1": EOF', "EOF"),
    ("Patch http://r/v2/a/blobs/uploads/x: unexpected EOF", "EOF"),
    ("blob upload unknown: blob upload unknown to registry", "blob upload unknown"),
    ("net/http: TLS handshake timeout", "timeout"),
    ('Get "https://r/v2/": dial tcp 10.0.0.1:443: i/o timeout', "timeout"),
    ("write tcp 127.0.0.1:1->127.0.0.1:2: write: broken pipe", "broken pipe"),
    # MLflow / urllib texts
    ("API request to endpoint /api/2.0/mlflow/runs/create failed with error code 503 != 200",
     "HTTP 503"),
    ("Max retries exceeded with url: /x (Caused by ResponseError('too many 502 error "
     "responses'))", "HTTP 502"),
    ("<urlopen error [Errno 111] Connection refused>", "connection refused"),
    ("HTTP Error 504: Gateway Timeout", "HTTP 504"),
]

PERMANENT = [
    "unauthorized: authentication required",
    "denied: requested access to the resource is denied",
    "denied: injected HTTP 403",
    "no basic auth credentials",
    "manifest unknown: manifest unknown",
    "name invalid: invalid repository name",
    "invalid reference format",
    "An image does not exist locally with the tag: 127.0.0.1:5000/x",
    'Get "https://127.0.0.1:5000/v2/": http: server gave HTTP response to HTTPS client',
    "x509: certificate signed by unknown authority",
    "manifest blob unknown: blob unknown to registry",
    "",
    # a server error that says "denied" is the denial, not the 500
    "received unexpected HTTP status: 500 Internal Server Error: access denied",
    # numbers that are no status: a port, a size
    "dial tcp 127.0.0.1:500: connect: no such host",
    "pushed 503 bytes",
]


@pytest.mark.parametrize(("text", "reason"), TRANSIENT)
def test_transient_failures_are_named(text: str, reason: str) -> None:
    cause = retry.classify(text)
    assert cause is not None and cause.reason == reason


@pytest.mark.parametrize("text", PERMANENT)
def test_permanent_or_unknown_failures_are_not_retried(text: str) -> None:
    assert retry.classify(text) is None


def test_retry_after_is_read_when_the_text_shows_it() -> None:
    cause = retry.classify("toomanyrequests: slow down (Retry-After: 7)")
    assert cause == retry.Transient("HTTP 429", 7.0)
    assert retry.Policy().wait(1, cause) == 7.0
    assert retry.Policy().wait(1, retry.Transient("HTTP 429", 3600)) == retry.RETRY_AFTER_MAX


def test_from_error_reads_a_failed_commands_stderr_only() -> None:
    failed = StepFailed("push failed", stderr="received unexpected HTTP status: 503 x")
    assert retry.from_error(failed) == retry.Transient("HTTP 503")
    assert retry.from_error(ConnectionRefusedError(111, "Connection refused")) is not None
    # an engine error (a docker timeout, a daemon that does not answer) is not retried here
    assert retry.from_error(EngineError("push: timed out after 1800 s")) is None


def test_policy_from_env_defaults_bounds_and_errors() -> None:
    assert retry.Policy.from_env({}) == retry.Policy(4, 1.0, 10.0)
    got = retry.Policy.from_env({"MACI_RETRY_ATTEMPTS": "2", "MACI_RETRY_WAIT_INITIAL": "0.05",
                                 "MACI_RETRY_WAIT_MAX": "0.1"})
    assert got == retry.Policy(2, 0.05, 0.1)
    for bad in ({"MACI_RETRY_ATTEMPTS": "0"}, {"MACI_RETRY_ATTEMPTS": "11"},
                {"MACI_RETRY_WAIT_INITIAL": "soon"}, {"MACI_RETRY_WAIT_MAX": "-1"}):
        with pytest.raises(ConfigError, match="MACI_RETRY_"):
            retry.Policy.from_env(bad)


def test_backoff_doubles_with_bounded_jitter() -> None:
    policy = retry.Policy(4, 1.0, 3.0)
    for n, base in ((1, 1.0), (2, 2.0), (3, 3.0)):
        assert base <= policy.wait(n) <= min(3.0, base * 1.25)
    assert retry.Policy().worst_case_wait() == pytest.approx(1.25 + 2.5 + 5.0)


class Flaky:
    """Fails with the given stderr texts in turn, then returns 'ok'."""

    def __init__(self, *errors: str) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise StepFailed("push failed", step="push", stderr=self.errors.pop(0))
        return "ok"


FAST = retry.Policy(4, 0.01, 0.02)


def test_call_retries_transient_failures_and_logs_each_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fn = Flaky("received unexpected HTTP status: 500 Internal Server Error",
               "read: connection reset by peer")
    with caplog.at_level(logging.WARNING, "ci.adapters.retry"):
        assert retry.call(fn, what="push linux/arm64", policy=FAST) == "ok"
    assert fn.calls == 3
    # (stamina's own hook adds a bare "stamina.retry_scheduled" record: not ours)
    lines = [r.getMessage() for r in caplog.records if r.name == "ci.adapters.retry"]
    assert len(lines) == 2
    assert lines[0].startswith("push linux/arm64: attempt 2/4 after HTTP 500 (retrying in 0.0")
    assert lines[1].startswith("push linux/arm64: attempt 3/4 after connection reset (retrying")


def test_call_raises_a_permanent_failure_at_once(caplog: pytest.LogCaptureFixture) -> None:
    fn = Flaky("denied: requested access to the resource is denied")
    with pytest.raises(StepFailed, match="push failed"):
        retry.call(fn, what="push", policy=FAST, give_up=EngineError)
    assert fn.calls == 1 and not caplog.records


def test_call_gives_up_after_the_attempts_naming_them_and_the_cause() -> None:
    fn = Flaky(*["received unexpected HTTP status: 500 Internal Server Error"] * 9)
    started = time.monotonic()
    with pytest.raises(EngineError) as err:
        retry.call(fn, what="push linux/amd64", policy=FAST, give_up=EngineError)
    assert time.monotonic() - started < 1
    assert fn.calls == 4
    assert err.value.message == ("push linux/amd64 failed after 4 attempts (last: HTTP 500): "
                                 "received unexpected HTTP status: 500 Internal Server Error")
    assert isinstance(err.value.__cause__, StepFailed)


def test_call_without_give_up_reraises_the_last_error() -> None:
    fn = Flaky("a: EOF", "b: EOF")
    with pytest.raises(StepFailed) as err:
        retry.call(fn, what="x", policy=retry.Policy(2, 0, 0))
    assert err.value.stderr == "b: EOF" and fn.calls == 2


def test_a_permanent_failure_after_transient_ones_is_raised_unchanged() -> None:
    fn = Flaky("HTTP status: 503", "unauthorized: authentication required")
    with pytest.raises(StepFailed) as err:
        retry.call(fn, what="x", policy=FAST, give_up=EngineError)
    assert "unauthorized" in err.value.stderr and fn.calls == 2


def test_one_attempt_means_no_retry() -> None:
    fn = Flaky("HTTP status: 503")
    with pytest.raises(EngineError, match="failed after 1 attempt "):
        retry.call(fn, what="x", policy=retry.Policy(1, 0, 0), give_up=EngineError)
    assert fn.calls == 1


def test_messages_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    from ci.core import redact

    redact.register("hunter2-secret")
    fn = Flaky("dial tcp: connection refused (user hunter2-secret)", "again: connection refused")
    with caplog.at_level(logging.WARNING, "ci.adapters.retry"), pytest.raises(EngineError) as err:
        retry.call(fn, what="push as hunter2-secret", policy=retry.Policy(2, 0, 0),
                   give_up=EngineError)
    assert "hunter2-secret" not in err.value.message + caplog.text
    assert "***" in err.value.message


def test_logged_keeps_every_attempts_output(tmp_path: Path) -> None:
    log_file = tmp_path / "push.log"
    log_file.write_text("from an earlier run\n")
    outputs: list[StepFailed | proc.Result] = [
        StepFailed("x", stdout="layer pushed\n", stderr="HTTP status: 500\n"),
        proc.Result(["docker", "push"], 0, "digest: sha256:1\n", "")]

    def step() -> proc.Result:
        out = outputs.pop(0)
        if isinstance(out, StepFailed):
            raise out
        return out

    retry.call(retry.logged(step, log_file), what="push", policy=retry.Policy(2, 0, 0))
    text = log_file.read_text()
    assert "earlier run" not in text
    assert text.index("HTTP status: 500") < text.index("--- attempt 2 ---") < text.index(
        "digest: sha256:1")
