"""`ci smoke --url` (issue #17, the workflow's stress step): the release's smoke client and
[smoke] bounds against a service that already runs, here a stdlib HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ci.cli import main
from ci.commands.doctor import deploy_layout
from ci.core import config as cfg

CONFIG = """
[project]
name = "svc"
image = "registry.example.com/svc"

[smoke]
requests = 12
concurrency = 3
p95_ms = 2000
startup_timeout_seconds = 3
"""


class _Service(BaseHTTPRequestHandler):
    status = 200  # what /predict answers (the class attribute is set per server below)

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/health" else 404)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(self.status if self.path == "/predict" else 404)

    def _answer(self, code: int) -> None:
        body = json.dumps({"class": "class_0"}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def _serve(status: int) -> Iterator[str]:
    handler = type("Handler", (_Service,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def healthy() -> Iterator[str]:
    yield from _serve(200)


@pytest.fixture
def broken() -> Iterator[str]:
    yield from _serve(500)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "ci.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_healthy_service_passes_and_the_result_is_written(project: Path, healthy: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    ref = "registry.example.com/svc@sha256:" + "1" * 64
    assert main(["smoke", "--url", healthy + "/", "--reference", ref, "-o", "out/smoke.json",
                 "--json"]) == 0
    result = json.loads((project / "out" / "smoke.json").read_text())
    assert result["passed"] and result["requests"] == 12 and result["errors"] == 0
    assert result["reference"] == ref and result["bound_ms"] == 2000
    assert json.loads(capsys.readouterr().out)["passed"]


def test_failing_requests_fail_the_gate_with_the_reason(project: Path, broken: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke", "--url", broken, "-o", "smoke.json"]) == 1
    result = json.loads((project / "smoke.json").read_text())
    assert not result["passed"] and result["errors"] == 12
    assert "HTTP 500 x12" in capsys.readouterr().err


def test_a_service_that_never_answers_fails_within_the_startup_bound(project: Path) -> None:
    assert main(["smoke", "--url", "http://127.0.0.1:9", "-o", "smoke.json"]) == 1
    result = json.loads((project / "smoke.json").read_text())
    assert "not healthy within 3 s" in result["reason"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["smoke", "--url", "ftp://host"], "--url: 'ftp://host' is not an http(s)"),
    (["smoke", "--url", "http://a b"], "--url"),
])
def test_bad_urls_are_usage_errors(project: Path, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_no_smoke_section_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ci.toml").write_text(CONFIG.split("[smoke]")[0])
    monkeypatch.chdir(tmp_path)
    assert main(["smoke", "--url", "http://127.0.0.1:9"]) == 2
    assert "smoke: the config has no [smoke] section" in capsys.readouterr().err


def test_doctor_explains_the_deploy_branch_layout() -> None:
    wine = Path(__file__).resolve().parents[2] / "examples" / "wine"
    layout = deploy_layout(cfg.load(wine / "ci.toml", {}, wine))
    assert layout["branch"] == "main" and layout["paths"] == ["k8s"]
    assert layout["guard"] == ".maci/deployed.json"
    assert "sync path k8s of main with Argo CD" in layout["line"]
