"""A tiny serving app for smoke tests: stdlib only, so it starts fast even under qemu.

SMOKEAPP_MODE: ok (default), unhealthy (/health answers 503 forever), broken (/predict 500).
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("SMOKEAPP_MODE", "ok")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid a 40 ms stall

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            if MODE == "unhealthy":
                self._send(503, {"status": "starting"})
            else:
                self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        if self.path != "/predict":
            self._send(404, {"error": "not found"})
        elif MODE == "broken":
            self._send(500, {"error": "model not loaded"})
        else:
            features = json.loads(raw or b"{}").get("features", [])
            self._send(200, {"prediction": sum(float(x) for x in features)})

    def log_message(self, fmt: str, *args: object) -> None:
        if self.path != "/predict":
            super().log_message(fmt, *args)


if __name__ == "__main__":
    print(f"smokeapp mode={MODE} listening on 8080", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
