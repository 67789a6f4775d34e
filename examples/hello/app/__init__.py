"""hello: `GET /health` and `GET /hello?name=...` over the standard library's http.server."""

from __future__ import annotations

import json
import platform
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_NAME = 64


def greeting(name: str = "") -> str:
    """`hello, NAME` (`hello, world` without a name); a name longer than MAX_NAME is cut."""
    name = " ".join(name.split())[:MAX_NAME]
    return f"hello, {name or 'world'}"


def respond(path: str) -> tuple[int, dict[str, str]]:
    """The status and JSON body for a GET of `path` (pure: the handler only writes it)."""
    url = urlsplit(path)
    if url.path == "/health":
        return HTTPStatus.OK, {"status": "ok", "machine": platform.machine()}
    if url.path == "/hello":
        name = parse_qs(url.query).get("name", [""])[0]
        return HTTPStatus.OK, {"message": greeting(name)}
    return HTTPStatus.NOT_FOUND, {"error": f"no route {url.path}"}


class Handler(BaseHTTPRequestHandler):
    server_version = "hello/0.1"

    def do_GET(self) -> None:
        status, body = respond(self.path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet in tests
        pass


def make_server(host: str = "0.0.0.0", port: int = 8080) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), Handler)
