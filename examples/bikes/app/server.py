"""HTTP serving for the demand model: GET /health, POST /predict (stdlib http.server + numpy).

The model is read once at start from MODEL_DIR (baked into the image at build time):
coef.npy (the coefficients) and registered.json (which registered version it is, written
by the pipeline), so /health can prove which model version a pod serves.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from app.features import FEATURES, FeatureError
from app.model import MODEL_FILE, DemandModel, ModelError

MAX_BODY = 1 << 20
MAX_BATCH = 1000


def load_registration(model_dir: Path) -> dict[str, str]:
    """Name/version/URI/sha256 of the registered version, or "unknown" for a local model."""
    info = {"name": "unknown", "version": "unknown", "uri": "", "run_id": "", "sha256": ""}
    try:
        data = json.loads((model_dir / "registered.json").read_text())
    except (OSError, json.JSONDecodeError):
        return info
    return {k: str(data.get(k, v)) for k, v in info.items()}


class App:
    def __init__(self, model: DemandModel, registration: dict[str, str]) -> None:
        self.model = model
        self.registration = registration

    @classmethod
    def from_dir(cls, model_dir: Path) -> App:
        return cls(DemandModel.load(model_dir / MODEL_FILE), load_registration(model_dir))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": {**self.registration, "features": list(FEATURES)},
                "numpy": np.__version__, "machine": platform.machine()}

    def predict(self, body: Any) -> dict[str, Any]:
        """{"features": ...} → {"rentals": n}; {"instances": [...]} → {"predictions": [...]}."""
        if not isinstance(body, dict):
            raise FeatureError('body must be a JSON object with "features" or "instances"')
        model = {"name": self.registration["name"], "version": self.registration["version"]}
        if "instances" in body:
            items = body["instances"]
            if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
                raise FeatureError(f'"instances" must be a list of 1..{MAX_BATCH} feature sets')
            return {"predictions": self.model.predict_many(items), "model": model}
        if "features" not in body:
            raise FeatureError('body must have "features" or "instances"')
        return {"rentals": self.model.predict_one(body["features"]), "model": model}


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "bikes/1"
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # no 40 ms delayed-ACK wait per keep-alive response

        def _send(self, status: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] in ("/health", "/healthz"):
                self._send(HTTPStatus.OK, app.health())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != "/predict":
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"null")
                self._send(HTTPStatus.OK, app.predict(body))
            except json.JSONDecodeError as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": f"invalid JSON: {exc}"})
            except FeatureError as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

        def log_message(self, format: str, *args: Any) -> None:
            if os.environ.get("ACCESS_LOG", "0") == "1":
                super().log_message(format, *args)

    return Handler


def make_server(app: App, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(app))
    server.daemon_threads = True
    return server


def main() -> int:
    model_dir = Path(os.environ.get("MODEL_DIR", "/srv/model"))
    try:
        app = App.from_dir(model_dir)
    except ModelError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    server = make_server(app, os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "8080")))
    # As PID 1 in a container SIGTERM is ignored unless handled: shut down cleanly instead.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    reg = app.registration
    print(f"serving {reg['name']} version {reg['version']} on port {server.server_address[1]}"
          f" ({platform.machine()}, numpy {np.__version__})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
