"""hello's tests: run on the host (`python3 -m pytest`) and in the image's test stage."""

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from app import MAX_NAME, greeting, make_server, respond


def test_greeting() -> None:
    assert greeting() == "hello, world"
    assert greeting("  Ada   Lovelace ") == "hello, Ada Lovelace"
    assert greeting("x" * 500) == "hello, " + "x" * MAX_NAME


def test_routes() -> None:
    assert respond("/hello?name=Ada") == (200, {"message": "hello, Ada"})
    status, body = respond("/health")
    assert status == 200 and body["status"] == "ok"
    assert respond("/nope")[0] == 404


@pytest.fixture
def base_url() -> Iterator[str]:
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_over_http(base_url: str) -> None:
    with urllib.request.urlopen(f"{base_url}/hello?name=CI", timeout=5) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert json.loads(resp.read()) == {"message": "hello, CI"}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{base_url}/missing", timeout=5)
    assert err.value.code == 404
