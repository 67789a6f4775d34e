"""The tracking server's REST API for the calls made before the training script (adapter).

Importing MLflow costs ~2 s (3-6 s on a loaded runner), and the run must exist before the
script starts: so the experiment lookup, the reuse search, the run and its params go over
httpx here, and MLflow's own client (imported on a thread while the script runs) does the
rest. It behaves as MLflow's HTTP client does with our `HTTP_DEFAULTS`: the same endpoints
and bodies, the same auth (MLFLOW_TRACKING_TOKEN, or USERNAME/PASSWORD), the same TLS
settings, MLFLOW_HTTP_REQUEST_* retries of connection errors, timeouts, 408/429/5xx with
urllib3's backoff, Retry-After ignored, and each retry one warning line (`mlflow_errors`).
A setting it does not implement (an auth plugin, SigV4, a client certificate, workspaces)
makes `for_uri` answer None: then MLflow's client does every call, as before.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx

from ci.adapters import mlflow_errors, retry
from ci.adapters.tracking_records import RunRecord

# the MLflow client settings this client does not implement: with any of them set, MLflow's
# own client makes every call
UNSUPPORTED = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_AWS_SIGV4",
               "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_WORKSPACE", "MLFLOW_ENABLE_WORKSPACES")
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})  # MLflow's _TRANSIENT_FAILURE_RESPONSE_CODES
API = "/api/2.0/mlflow"


class _Refused(Exception):
    """The server refused the call (an MLflow error body), not worth asking again."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = f"{code}: {message}"


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes"}


def _number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    cause = retry.classify(f"{exc} {exc.__cause__ or ''}")
    return cause.reason if cause else type(exc).__name__


def _run(data: Mapping[str, Any]) -> RunRecord:
    info, body = data.get("info") or {}, data.get("data") or {}

    def pairs(key: str) -> dict[str, str]:
        return {str(p["key"]): str(p.get("value", "")) for p in body.get(key) or []}

    return RunRecord(
        run_id=str(info["run_id"]), experiment_id=str(info["experiment_id"]),
        status=str(info.get("status", "")),
        metrics={str(m["key"]): float(m["value"]) for m in body.get("metrics") or []},
        params=pairs("params"), tags=pairs("tags"), artifact_uri=str(info.get("artifact_uri", "")),
    )


class RestPreflight:
    """The four pre-script calls over MLflow's REST API (see the module docstring)."""

    def __init__(self, uri: str, http: httpx.Client) -> None:
        self.base = uri.rstrip("/")
        self.http = http

    @classmethod
    def for_uri(cls, uri: str) -> RestPreflight | None:
        """A client configured from os.environ as MLflow's would be, or None when MLflow's
        settings ask for something only its own client does."""
        env = os.environ
        if not uri.startswith(("http://", "https://")) or any(env.get(k) for k in UNSUPPORTED):
            return None
        headers = {"User-Agent": "multiarch-ci"}
        auth: tuple[str, str] | None = None
        user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
        if user and password:  # MLflow's order: basic auth first, else the bearer token
            auth = (user, password)
        elif env.get("MLFLOW_TRACKING_TOKEN"):
            headers["Authorization"] = f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"
        verify: bool | str = True
        if uri.startswith("http://"):  # no TLS at all (redirects are not followed): building
            verify = False  # the CA context would cost ~0.1 s for nothing
        elif _true(env.get("MLFLOW_TRACKING_INSECURE_TLS")):
            verify = False
        elif env.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            verify = env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        timeout = _number("MLFLOW_HTTP_REQUEST_TIMEOUT", 120.0)
        http = httpx.Client(headers=headers, auth=auth, verify=verify, timeout=timeout,
                            follow_redirects=False, trust_env=True)
        return cls(uri, http)

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------ the calls

    def experiment_id(self, name: str) -> str | None:
        """The experiment's id, created on first use (a server chooses where artifacts go)."""
        what = f"get experiment {name!r}"
        try:
            found = self.call("GET", "/experiments/get-by-name", what,
                              params={"experiment_name": name})
            return _field(found, what, "experiment", "experiment_id")
        except _Refused as exc:
            if exc.code != "RESOURCE_DOES_NOT_EXIST":
                raise mlflow_errors.failed(what, exc.message) from None
        try:
            created = self.call("POST", "/experiments/create", what, json={"name": name})
            return _field(created, what, "experiment_id")
        except _Refused as exc:
            raise mlflow_errors.failed(what, exc.message) from None

    def find_runs(self, experiment_id: str, tags: Mapping[str, str], status: str,
                  limit: int) -> list[RunRecord] | None:
        """Newest runs carrying all `tags` with the given status (the filter MLflow's
        search_runs gets from the adapter)."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        clauses.append(f"attributes.status = '{status}'")
        body = {"experiment_ids": [experiment_id], "filter": " and ".join(clauses),
                "run_view_type": "ACTIVE_ONLY", "max_results": limit,
                "order_by": ["attributes.start_time DESC"]}
        try:
            found = self.call("POST", "/runs/search", "search runs", json=body)
        except _Refused as exc:
            raise mlflow_errors.failed("search runs", exc.message) from None
        try:
            return [_run(r) for r in found.get("runs") or []]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise mlflow_errors.failed("search runs", f"unexpected answer ({exc!r})") from None

    def create_run(self, experiment_id: str, tags: Mapping[str, str], run_name: str) -> str | None:
        body = {"experiment_id": experiment_id, "user_id": tags.get("mlflow.user", "unknown"),
                "start_time": int(time.time() * 1000), "run_name": run_name,
                "tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}
        try:
            created = self.call("POST", "/runs/create", "create run", json=body)
            return _field(created, "create run", "run", "info", "run_id")
        except _Refused as exc:
            raise mlflow_errors.failed("create run", exc.message) from None

    def log_params(self, run_id: str, params: Mapping[str, str]) -> bool:
        body = {"run_id": run_id, "params": [{"key": k, "value": str(v)} for k, v in params.items()]}
        try:
            self.call("POST", "/runs/log-batch", "log params", json=body)
        except _Refused as exc:
            raise mlflow_errors.failed("log params", exc.message) from None
        return True

    # ------------------------------------------------------------ one request, retried

    def call(self, method: str, endpoint: str, what: str, *, json: Any = None,
             params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One API call with MLflow's retry rules; its JSON answer, or _Refused when the
        server refused it, or TrackingError when the attempts ran out."""
        path = API + endpoint
        total = mlflow_errors.attempts_allowed()
        factor = _number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2.0)
        jitter = _number("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 1.0)
        done = 0
        while True:
            try:
                resp = self.http.request(method, self.base + path, json=json, params=params)
            except httpx.TransportError as exc:
                reason, detail = _reason(exc), f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 400:
                    return _answer(resp, what, path)
                if resp.status_code not in TRANSIENT:
                    raise _refused(resp)
                reason, detail = f"HTTP {resp.status_code}", f"too many {resp.status_code} error responses"
            done += 1
            if done >= total:
                after = f" after {total} attempts (last: {reason})" if total > 1 else ""
                raise mlflow_errors.failed(what, f"API request to {path} failed: {detail}", after)
            pause = mlflow_errors.urllib3_pause(done, factor)
            mlflow_errors.retry_line(method, path, done, total, reason, pause)
            time.sleep(pause + random.random() * jitter)  # MLflow's jittered backoff


def _answer(resp: httpx.Response, what: str, path: str) -> dict[str, Any]:
    """A success's JSON object (MLflow answers `{}` when there is nothing to say)."""
    try:
        data = resp.json() if resp.content else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise mlflow_errors.failed(what, f"API request to {path} answered HTTP {resp.status_code} "
                                         f"without a JSON object: {resp.text[:200]}")
    return data


def _field(data: Mapping[str, Any], what: str, *keys: str) -> str:
    """`data[k1][k2]…` as text, or TrackingError naming the call (not a KeyError)."""
    value: Any = data
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None or isinstance(value, (dict, list)):
        raise mlflow_errors.failed(what, f"the answer has no {'.'.join(keys)}: {dict(data)}")
    return str(value)


def _refused(resp: httpx.Response) -> _Refused:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error_code"):
        return _Refused(str(body["error_code"]), str(body.get("message", "")))
    text = mlflow_errors.first_line(resp.text) or resp.reason_phrase
    return _Refused(f"HTTP {resp.status_code}", text)

