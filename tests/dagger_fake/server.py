"""The fake engine's HTTP face: POST /query on 127.0.0.1 with HTTP Basic auth (token as user).

Runs in a thread of the test process so tests can set failure rules and read the recorded
documents directly; child processes reach it through the fake CLI's session line.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import graphql

from tests.dagger_fake.engine import FakeEngine


def load_schema(path: Path) -> graphql.GraphQLSchema:
    return graphql.build_schema(path.read_text())


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/query":
            self._reply(404, {"message": "not found"})
            return
        token = self._token()
        if token is None or not self.server.engine.known_token(token):
            self._reply(401, {"message": "unauthorized"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._reply(400, {"message": "body is not JSON"})
            return
        self._reply(200, self.server.engine.handle(token, body))

    def _token(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if not password else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.engine = engine


class FakeServer:
    """A running fake engine; `token` is the session a `dagger run` parent would hand out."""

    def __init__(self, schema: graphql.GraphQLSchema, root: Path) -> None:
        (root / "sessions").mkdir(parents=True, exist_ok=True)
        self.engine = FakeEngine(schema, root)
        self.token = secrets.token_hex(16)
        self.engine.tokens.add(self.token)
        self._server = _Server(self.engine)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="dagger-fake")

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.engine.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
