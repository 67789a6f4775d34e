"""The HTTP app on a real socket (a thread in this process): routes, answers, errors."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from app.server import App, load_registration, make_server


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
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_names_the_registered_version(base_url: str) -> None:
    status, body = call(base_url + "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["model"]["name"] == "wine-classifier"
    assert body["model"]["version"] == "7"
    assert body["model"]["features"] == ["a", "b"]


def test_predict_one(base_url: str) -> None:
    status, body = call(base_url + "/predict", {"features": {"a": 11.0, "b": 2.0}})
    assert status == 200
    assert body["class"] == "x"
    assert body["label"] == 0
    assert body["model"] == {"name": "wine-classifier", "version": "7"}


def test_predict_batch(base_url: str) -> None:
    status, body = call(base_url + "/predict",
                        {"instances": [[11.0, 2.0], {"a": 1.0, "b": 22.0}]})
    assert status == 200
    assert [p["class"] for p in body["predictions"]] == ["x", "y"]


@pytest.mark.parametrize(("payload", "raw", "message"), [
    ({"features": {"a": 1.0}}, None, "missing features"),
    ({"nothing": 1}, None, "features"),
    ([1, 2], None, "JSON object"),
    ({"instances": []}, None, "instances"),
    (None, b"{broken", "invalid JSON"),
])
def test_bad_requests_get_400_with_reason(base_url: str, payload: object, raw: bytes | None,
                                          message: str) -> None:
    status, body = call(base_url + "/predict", payload, raw)
    assert status == 400
    assert message in body["error"]


def test_unknown_routes_get_404(base_url: str) -> None:
    assert call(base_url + "/nope")[0] == 404
    assert call(base_url + "/health", {"x": 1})[0] == 404


def test_registration_defaults_to_unknown(tmp_path: Path) -> None:
    assert load_registration(tmp_path)["version"] == "unknown"
