"""What the fake engine serves when a tunnelled Dagger service starts: a tiny HTTP stand-in.

`Host.tunnel(service).start` on the real engine forwards a port of the client's host to the
container; here the fake starts this stdlib server on 127.0.0.1 in a thread instead, so the
smoke client really connects, waits for health and measures. It answers every GET with 200
(the health path) and every POST with a JSON prediction, unless a `ServeRule` for the
service's platform says otherwise (HTTP errors, slow answers, never healthy). `stop` shuts it
down, so a test can check nothing keeps serving after the smoke.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ServeRule:
    """How the stand-in of a platform's service answers (None platform: every platform)."""

    platform: str | None = None
    status: int = 200  # of every POST (the predict path)
    delay_ms: float = 0.0  # before each POST's answer
    health_status: int = 200  # of every GET (the health path)
    fail_start: str = ""  # non-empty: `start` fails with this message (the service exited)


@dataclass
class StandIn:
    """One started tunnel: what it serves and where, and whether it was stopped."""

    platform: str
    address: str  # what `from` pulled: the reference the smoke ran
    backend: int  # the exposed container port the tunnel forwards to
    rule: ServeRule
    session: str = ""  # the token of the session that started it
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    stopped: bool = False
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> StandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stand_in.requests.append(("GET", self.path))
                status = stand_in.rule.health_status
                self._reply(status, {"status": "ok" if status == 200 else "unhealthy"})

            def do_POST(self) -> None:
                stand_in.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if stand_in.rule.delay_ms:
                    time.sleep(stand_in.rule.delay_ms / 1000)
                status = stand_in.rule.status
                self._reply(status, {"prediction": 1.0, "platform": stand_in.platform}
                            if status == 200 else {"error": "fake failure"})

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True,
                                        name=f"dagger-fake-service-{self.platform}")
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        """What the engine's `Service.stop` does: the tunnel closes, and it is recorded."""
        self.close()
        self.stopped = True

    def close(self) -> None:
        """Shut the server down without recording a stop (the fixture's teardown)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            if self._thread is not None:
                self._thread.join(5)
