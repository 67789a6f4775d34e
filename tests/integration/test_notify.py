"""Release notifications against a real local HTTP receiver (stdlib http.server in a thread).

The receiver parses each request back with the cloudevents SDK; a dead or failing webhook
is reported in the NotifyReport and never raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from ci.core.config import NotifyConfig
from ci.core.redact import register
from ci.core.results import PlatformResult, SourceInfo
from ci.core.verdict import ModelVerdict, Verdict, decide
from ci.stages.notify import EVENT_PREFIX, notify_sync
from tests.fixtures.procs import free_port

pytestmark = pytest.mark.integration

IMAGE = "127.0.0.1:5000/wine"
DIGEST = "sha256:" + "ab" * 32


@dataclass
class Receiver:
    port: int
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    flaky_left: int = 1

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status = 202
            if self.path == "/flaky" and state.flaky_left > 0:
                state.flaky_left -= 1
                status = 503
            elif self.path == "/reject":
                status = 400
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def make_verdict(passed: bool, source: SourceInfo | None = None) -> Verdict:
    platforms = [
        PlatformResult(project="wine", image=IMAGE, platform=p, runner="local", engine="docker",
                       placement=kind, status="passed", digest="sha256:" + c * 64,  # type: ignore[arg-type]
                       durations={"build": 3.0})
        for p, kind, c in (("linux/amd64", "native", "1"), ("linux/arm64", "emulated", "2"))
    ]
    model = ModelVerdict(registered_model="wine-clf", alias="champion", run_id="r", candidate_version="4",
                         passed=passed, reason="" if passed else "accuracy regressed")
    return decide(run_id="run-9", project="wine", image=IMAGE, created="2024-01-01T00:00:00Z",
                  source=source or SourceInfo(sha="abc123", repository_url="https://git.example/team/wine"),
                  expected_platforms=["linux/amd64", "linux/arm64"], platforms=platforms, model=model,
                  model_required=True, smoke=[], smoke_required=False, emulation_budget_seconds=None)


def parse(headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
    return from_http(HTTPMessage(headers=headers, body=body), JSONFormat())


def test_published_event_is_a_valid_structured_cloudevent(receiver: Receiver) -> None:
    report = notify_sync(make_verdict(True), NotifyConfig(webhooks=[receiver.url("/hook")]),
                         index_digest=DIGEST, tags=["main"], deploy_commit="d" * 40, promoted_version="4")
    assert report.ok and report.event_type == f"{EVENT_PREFIX}.published"
    assert [(d.delivered, d.status, d.attempts) for d in report.deliveries] == [(True, 202, 1)]
    [(path, headers, body)] = receiver.requests
    assert path == "/hook"
    assert headers["content-type"].startswith("application/cloudevents+json")
    assert not any(k.lower().startswith("ce-") for k in headers)  # structured, not binary mode
    event = parse(headers, body)
    assert event.get_specversion() == "1.0"
    assert event.get_id() == report.event_id
    assert event.get_type() == "dev.maci.release.published"
    assert event.get_source() == "https://git.example/team/wine"
    assert event.get_subject() == IMAGE
    data = event.get_data()
    assert isinstance(data, dict)
    assert data["index_digest"] == DIGEST and data["reference"] == f"{IMAGE}@{DIGEST}"
    assert data["model_version"] == "4" and data["promoted_version"] == "4"
    assert [(p["platform"], p["placement"]) for p in data["platforms"]] == [
        ("linux/amd64", "native"), ("linux/arm64", "emulated")]
    assert data["verdict"] == make_verdict(True).summary()


def test_rejected_event_and_fallback_source(receiver: Receiver) -> None:
    verdict = make_verdict(False, SourceInfo(sha="abc"))
    report = notify_sync(verdict, NotifyConfig(webhooks=[receiver.url("/a"), receiver.url("/b")]))
    assert report.ok and len(report.deliveries) == 2
    events = [parse(h, b) for _, h, b in receiver.requests]
    assert {e.get_type() for e in events} == {"dev.maci.release.rejected"}
    assert {e.get_id() for e in events} == {report.event_id}  # one event, same id everywhere
    assert events[0].get_source() == "multiarch-ci/wine"
    data = events[0].get_data()
    assert isinstance(data, dict)
    assert data["index_digest"] is None
    assert data["verdict"]["reasons"] == ["model gate: accuracy regressed"]


def test_dead_failing_and_5xx_webhooks_are_reported_not_raised(receiver: Receiver) -> None:
    dead = f"http://user:hunter2-pass@127.0.0.1:{free_port()}/hook?token=abc"
    register("hunter2-pass")
    hooks = [dead, receiver.url("/reject"), receiver.url("/flaky"), receiver.url("/ok")]
    started = time.monotonic()
    report = notify_sync(make_verdict(True), NotifyConfig(webhooks=hooks, timeout_seconds=2),
                         index_digest=DIGEST)
    elapsed = time.monotonic() - started
    assert not report.ok
    by_url = {d.webhook: d for d in report.deliveries}
    gone = by_url[f"http://127.0.0.1:{dead.split(':')[3].split('/')[0]}/hook"]
    assert not gone.delivered and gone.status is None and "ConnectError" in gone.error
    assert gone.attempts == 3
    rejected = by_url[receiver.url("/reject")]
    assert (rejected.delivered, rejected.status, rejected.attempts) == (False, 400, 1)
    flaky = by_url[receiver.url("/flaky")]
    assert (flaky.delivered, flaky.status, flaky.attempts) == (True, 202, 2)
    assert by_url[receiver.url("/ok")].delivered
    assert [d.webhook for d in report.failed] == [gone.webhook, rejected.webhook]
    assert "hunter2" not in report.model_dump_json() and "token=abc" not in report.model_dump_json()
    assert elapsed < 10


def test_no_webhooks_sends_nothing() -> None:
    report = notify_sync(make_verdict(True), NotifyConfig(), index_digest=DIGEST)
    assert report.ok and report.deliveries == [] and report.event_type.endswith(".published")
