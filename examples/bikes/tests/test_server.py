"""The HTTP app on a real socket (a thread in this process): routes, answers, errors."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from app import check
from app.server import App, load_registration, make_server

WORKDAY = {"temperature": 20.0, "humidity": 0.5, "windspeed": 10.0, "hour": 8, "weekday": 2}


@pytest.fixture(scope="module")
def base_url(model_dir: Path) -> Iterator[str]:
    server = make_server(App.from_dir(model_dir))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def call(url: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_names_the_registered_version(base_url: str) -> None:
    status, body = call(base_url + "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["model"]["name"] == "bikes-demand" and body["model"]["version"] == "3"
    assert len(body["model"]["sha256"]) == 64
    assert body["model"]["features"][0] == "temperature"


def test_predict_one_and_many(base_url: str) -> None:
    status, body = call(base_url + "/predict", {"features": WORKDAY})
    assert status == 200 and body["rentals"] == pytest.approx(50.0)
    assert body["model"] == {"name": "bikes-demand", "version": "3"}
    status, body = call(base_url + "/predict", {"instances": [WORKDAY, {**WORKDAY, "weekday": 5}]})
    assert status == 200 and body["predictions"] == pytest.approx([50.0, 80.0])


@pytest.mark.parametrize(("body", "raw", "message"), [
    ({"features": {"temperature": 20}}, None, "missing features"),
    ({"instances": []}, None, "instances"),
    ([1, 2], None, "JSON object"),
    (None, b"{nope", "invalid JSON"),
])
def test_bad_requests_get_400(base_url: str, body: object, raw: bytes | None, message: str) -> None:
    status, answer = call(base_url + "/predict", body, raw)
    assert status == 400 and message in answer["error"]


def test_unknown_route_is_404(base_url: str) -> None:
    assert call(base_url + "/nope")[0] == 404


def test_registration_defaults_without_a_file(tmp_path: Path) -> None:
    assert load_registration(tmp_path)["version"] == "unknown"


def test_model_check_passes_and_catches_other_bytes(model_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    assert check.main() == 0
    assert "bikes-demand v3" in capsys.readouterr().out
    (tmp_path / "coef.npy").write_bytes((model_dir / "coef.npy").read_bytes())
    registered = json.loads((model_dir / "registered.json").read_text())
    (tmp_path / "registered.json").write_text(json.dumps({**registered, "sha256": "0" * 64}))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    assert check.main() == 1
    assert "registered.json says" in capsys.readouterr().err
