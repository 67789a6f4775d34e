"""The MLflow adapter: the only module that talks to a tracking server or store.

It fails closed: an unreachable server is a `TrackingError` within seconds (a probe with a
short timeout, then few HTTP retries), and every MLflow or network error is translated into
`TrackingError` here, so the model stage never half-publishes on a flaky server.

Retries: MLflow's own HTTP client retries every REST and artifact call (any method) on
connection errors, 408/429/5xx; `HTTP_DEFAULTS` bounds it and `_RetryLines` makes each retry
one visible log line. Our own retry (`ci.adapters.retry`) covers the one call MLflow does
not retry: the /health probe.
`mlflow` is imported inside functions: it costs ~1.4 s and `ci --help` must stay fast.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ci.adapters import retry
from ci.core import redact
from ci.core.config import Config
from ci.core.data import Frozen
from ci.core.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Lower MLflow's HTTP defaults (120 s timeout, 7 retries with backoff: minutes on a dead
# server; a Retry-After honoured up to 6 h) unless the user chose their own values. With
# these, one call makes 3 attempts, waiting 0 s then 2 s (+<=0.2 s jitter each; urllib3
# retries the first time at once): a server that refuses or answers 5xx/429 fails a call in
# ~2.4 s; one that accepts and never answers within 3 x 10 s + 2.4 s.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
}
PROBE_TIMEOUT = 3.0
# the probe retries a refused connection or 5xx quickly (a restarting server), at most
# MACI_RETRY_ATTEMPTS times with <= 0.25/0.5/1 s pauses; a hung server is not asked again
PROBE_WAIT_INITIAL, PROBE_WAIT_MAX = 0.25, 1.0
log = logging.getLogger(__name__)



class RunRecord(Frozen):
    """What the model stage needs from an MLflow run."""

    run_id: str
    experiment_id: str
    status: str
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    artifact_uri: str = ""


class VersionRecord(Frozen):
    """A registered model version; `version` is always a string (sqlite gives int, REST str)."""

    name: str
    version: str
    run_id: str = ""
    source: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _first_line(text: str, limit: int = 300) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _gave_up(text: str) -> str:
    """' after N attempts (last: CAUSE)' when MLflow's HTTP client retried the error until it
    gave up (the cause would often be cut off the end of MLflow's long message)."""
    try:
        attempts = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")) + 1
    except ValueError:
        return ""
    cause = retry.classify(text)
    return f" after {attempts} attempts (last: {cause.reason})" if attempts > 1 and cause else ""


@contextmanager
def translating(what: str) -> Iterator[None]:
    """Turn MLflow and network errors into TrackingError, naming the operation."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise TrackingError(redact.redact(
            f"MLflow {what} failed{_gave_up(exc.message)}: {_first_line(exc.message)}"
        )) from exc
    except OSError as exc:  # requests' errors are OSErrors too
        raise TrackingError(redact.redact(
            f"MLflow {what} failed{_gave_up(str(exc))}: {_first_line(str(exc))}"
        )) from exc


class _RetryLines(logging.Filter):
    """MLflow's client (requests + urllib3) retries silently: urllib3 notes a retry at DEBUG
    only. On urllib3's loggers this turns each retry into one warning line of ours and drops
    urllib3's own notes (its DEBUG lines and its duplicate "Retrying (...)" warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if record.levelno > logging.DEBUG:
            return not msg.startswith("Retrying (")
        args = record.args
        if msg.startswith("Incremented Retry") and isinstance(args, tuple) and len(args) == 2:
            _log_retry(str(args[0]), args[1])
        return False


def _log_retry(url: str, state: Any) -> None:
    """`MLflow POST /api/...: attempt 2/3 after HTTP 503 (retrying in 0.0 s)`."""
    history = list(getattr(state, "history", None) or ())
    if not history:
        return
    last, failed = history[-1], len(history)
    left = state.total if isinstance(state.total, int) else 0
    cause = retry.classify(str(last.error)) if last.error is not None else None
    reason = (f"HTTP {last.status}" if last.status else
              cause.reason if cause else type(last.error).__name__)
    # urllib3's backoff (jitter not included): none before the first retry, then doubling
    pause = 0.0 if failed <= 1 else min(float(state.backoff_max),
                                         float(state.backoff_factor) * 2.0 ** (failed - 1))
    path = url.split("?", 1)[0]
    who = "MLflow" if "mlflow" in path else "HTTP"
    log.warning("%s", redact.redact(f"{who} {last.method} {path}: attempt {failed + 1}/"
                                    f"{failed + 1 + left} after {reason} (retrying in {pause:.1f} s)"))


_RETRY_FILTER = _RetryLines()


def _watch_retries() -> None:
    """Install `_RetryLines` once per process (urllib3's retry notes are DEBUG records)."""
    for name in ("urllib3.util.retry", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if _RETRY_FILTER not in logger.filters:
            logger.addFilter(_RETRY_FILTER)
    logging.getLogger("urllib3.util.retry").setLevel(logging.DEBUG)


def _token(config: Config, environ: Mapping[str, str]) -> str | None:
    name = config.mlflow.token_env
    if not name:
        return None
    value = environ.get(name)
    if not value:
        raise TrackingError(f"mlflow.token_env: environment variable {name} is not set")
    redact.register(value)
    return value


def _probe_transient(exc: BaseException) -> retry.Transient | None:
    """A refused/reset connection or 5xx/429 is worth asking again; a timeout is not."""
    cause = retry.from_error(exc)
    return None if cause is None or cause.reason == "timeout" else cause


def probe(uri: str, token: str | None = None, timeout: float = PROBE_TIMEOUT,
          policy: retry.Policy | None = None) -> None:
    """GET <uri>/health with a short timeout, retried quickly on a refused connection or
    5xx (see PROBE_WAIT_*); raise TrackingError if it does not answer."""
    request = urllib.request.Request(uri.rstrip("/") + "/health")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    shown = re.sub(r"//[^/@]*@", "//", uri)  # user:password@ never reaches a log line
    rules = policy or retry.Policy.from_env()
    rules = retry.Policy(rules.attempts, min(rules.wait_initial, PROBE_WAIT_INITIAL),
                         min(rules.wait_max, PROBE_WAIT_MAX))

    def once() -> None:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            if resp.status != 200:
                raise urllib.error.HTTPError(request.full_url, resp.status, "not healthy",
                                             resp.headers, None)

    def unreachable(detail: str) -> TrackingError:
        return TrackingError(
            redact.redact(f"MLflow at {shown} is unreachable ({detail}); nothing was logged"))

    def gave_up(message: str) -> TrackingError:
        return TrackingError(f"{message}; the server is unreachable, nothing was logged")

    try:
        retry.call(once, what=f"MLflow health check at {shown}", transient=_probe_transient,
                   policy=rules, give_up=gave_up)
    except urllib.error.HTTPError as exc:
        raise unreachable(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise unreachable(str(getattr(exc, "reason", exc))) from None


def connect(config: Config, environ: Mapping[str, str] | None = None) -> Tracking:
    """A client for the configured tracking URI (embedded sqlite by default), checked to answer.

    The token (config mlflow.token_env) is registered for redaction and exported as
    MLFLOW_TRACKING_TOKEN, and the low HTTP retry defaults are exported too: MLflow reads
    both from os.environ, and the training subprocess inherits them.
    """
    env = os.environ if environ is None else environ
    uri = config.tracking_uri()
    token = _token(config, env)
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, env.get(key, value))
    artifact_root: str | None = None
    if uri.startswith(("http://", "https://")):
        _watch_retries()
        probe(uri, token, policy=retry.Policy.from_env(env))
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"cannot create the embedded MLflow store {db}: {exc}") from None
        artifact_root = (db.parent / "mlartifacts").as_uri()
    from mlflow import MlflowClient

    for noisy in ("mlflow", "alembic"):  # store migrations and "validation passed" chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Ending a run over HTTP makes MLflow print "View run … at: …" to stdout, which would
    # corrupt `ci … --json` (and gate.json in CI templates): links go in our own output instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with translating(f"connect to {uri}"):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return Tracking(client, uri, artifact_root)


def _str_dict(data: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (data or {}).items()}


def _version(mv: Any) -> VersionRecord:
    return VersionRecord(
        name=str(mv.name), version=str(mv.version), run_id=str(mv.run_id or ""),
        source=str(mv.source or ""), tags=_str_dict(mv.tags),
    )


class Tracking:
    """A connected MLflow client plus the operations the model stage uses."""

    def __init__(self, client: MlflowClient, uri: str, artifact_root: str | None = None) -> None:
        self.client = client
        self.uri = uri
        self.artifact_root = artifact_root

    # ------------------------------------------------------------ experiments and runs

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created on first use (artifacts beside an embedded store)."""
        with translating(f"get experiment {name!r}"):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            return str(self.client.create_experiment(name, artifact_location=self.artifact_root))

    def find_runs(self, experiment_id: str, tags: Mapping[str, str], status: str = "FINISHED",
                  limit: int = 1) -> list[RunRecord]:
        """Newest runs carrying all `tags` with the given status."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        clauses.append(f"attributes.status = '{status}'")
        with translating("search runs"):
            runs = self.client.search_runs(
                [experiment_id], " and ".join(clauses),
                order_by=["attributes.start_time DESC"], max_results=limit,
            )
        return [self._record(r) for r in runs]

    def create_run(self, experiment_id: str, tags: Mapping[str, str], run_name: str) -> str:
        with translating("create run"):
            run = self.client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        with translating("log params"):
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        with translating("set run tags"):
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, run_id: str, text: str, path: str) -> None:
        with translating(f"log artifact {path}"):
            self.client.log_text(run_id, text, path)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Metrics a script wrote to MACI_OUTPUT_DIR/metrics.json, at step 0, in batches."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        with translating("log metrics"):
            for start in range(0, len(items), 500):
                self.client.log_batch(run_id, metrics=items[start:start + 500])

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        """A folder's files as run artifacts at the same relative paths."""
        with translating(f"log artifacts of {folder.name}"):
            self.client.log_artifacts(run_id, str(folder))

    def log_model_dir(self, run_id: str, experiment_id: str, folder: Path, name: str) -> str:
        """A READY logged model of the run from `folder` (what `register` needs), for a
        script that logged files but no MLflow model; returns its id."""
        from mlflow.entities import LoggedModelOutput

        with translating(f"log model {name!r}"):
            model = self.client.create_logged_model(experiment_id, name=name,
                                                    source_run_id=run_id)
            self.client.log_model_artifacts(model.model_id, str(folder))
            self.client.finalize_logged_model(model.model_id, "READY")
            self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        return str(model.model_id)

    def finish_run(self, run_id: str, status: str) -> None:
        with translating(f"mark run {status}"):
            self.client.set_terminated(run_id, status)

    def run(self, run_id: str) -> RunRecord:
        with translating(f"get run {run_id}"):
            return self._record(self.client.get_run(run_id))

    @staticmethod
    def _record(run: Any) -> RunRecord:
        return RunRecord(
            run_id=str(run.info.run_id), experiment_id=str(run.info.experiment_id),
            status=str(run.info.status),
            metrics={str(k): float(v) for k, v in (run.data.metrics or {}).items()},
            params=_str_dict(run.data.params), tags=_str_dict(run.data.tags),
            artifact_uri=str(run.info.artifact_uri or ""),
        )

    def logged_model_id(self, run_id: str) -> str | None:
        """The model the run logged (MLflow 3 LoggedModel); the newest step if several."""
        with translating(f"get run {run_id}"):
            run = self.client.get_run(run_id)
        outputs = getattr(run, "outputs", None)
        models = list(getattr(outputs, "model_outputs", None) or [])
        if not models:
            return None
        return str(max(models, key=lambda m: m.step).model_id)

    def download(self, run_id: str, path: str, dest: Path) -> Path:
        """One run artifact into `dest` (a folder); returns the local file."""
        dest.mkdir(parents=True, exist_ok=True)
        with translating(f"download artifact {path} of run {run_id}"):
            return Path(self.client.download_artifacts(run_id, path, str(dest)))

    def logged_model_location(self, run_id: str) -> str | None:
        """Where the run's logged MLflow model keeps its files (None: it logged none)."""
        model_id = self.logged_model_id(run_id)
        if model_id is None:
            return None
        with translating(f"get the model of run {run_id}"):
            return str(self.client.get_logged_model(model_id).artifact_location)

    def artifact_kind(self, location: str, path: str) -> Literal["file", "dir"] | None:
        """Whether `path` ('' = all of it) exists under an artifact location, and as what."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        parent = posixpath.dirname(path)
        with translating(f"list artifacts of {location}"):
            repo = get_artifact_repository(artifact_uri=location, tracking_uri=self.uri)
            listed = repo.list_artifacts(parent or None)
        if not path:
            return "dir" if listed else None
        for info in listed:
            if posixpath.normpath(str(info.path)) == path:
                return "dir" if info.is_dir else "file"
        return None

    def download_from(self, location: str, path: str, dest: Path) -> Path:
        """A file or folder ('' = all) under an artifact location into `dest`; the local path."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        dest.mkdir(parents=True, exist_ok=True)
        with translating(f"download {path or 'the artifacts'} from {location}"):
            repo: Any = get_artifact_repository(artifact_uri=location, tracking_uri=self.uri)
            return Path(repo.download_artifacts(path, str(dest)))

    # ------------------------------------------------------------ registry

    def version_for_run(self, name: str, run_id: str) -> VersionRecord | None:
        """An existing version of `name` built from `run_id` (a reused run keeps its version)."""
        with translating(f"search versions of {name!r}"):
            found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        versions = sorted((_version(v) for v in found), key=lambda v: int(v.version))
        return versions[-1] if versions else None

    def register(self, name: str, run_id: str, tags: Mapping[str, str]) -> VersionRecord:
        """A new version of `name` from the model the run logged, carrying `tags`."""
        from mlflow.exceptions import MlflowException

        model_id = self.logged_model_id(run_id)
        if model_id is None:
            raise TrackingError(f"run {run_id} logged no model: nothing to register as {name!r}")
        with translating(f"register {name!r}"):
            try:
                self.client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            # The artifact location, not `models:/<id>`: MLflow's sqlite registry resolves
            # `models:/` through the process-global tracking URI, not this client's.
            location = self.client.get_logged_model(model_id).artifact_location
            mv = self.client.create_model_version(
                name, location, run_id=run_id, tags=dict(tags), model_id=model_id,
            )
        return _version(mv)

    def version(self, name: str, version: str) -> VersionRecord:
        with translating(f"get {name!r} version {version}"):
            return _version(self.client.get_model_version(name, str(version)))

    def version_by_alias(self, name: str, alias: str) -> VersionRecord | None:
        """The version behind `alias`, or None when the model or the alias does not exist yet."""
        from mlflow.exceptions import MlflowException

        with translating(f"get alias {alias!r} of {name!r}"):
            try:
                model = self.client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise
            aliases = dict(getattr(model, "aliases", None) or {})
        if alias not in aliases:
            return None
        return self.version(name, str(aliases[alias]))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        with translating(f"set alias {alias!r} of {name!r} to {version}"):
            self.client.set_registered_model_alias(name, alias, str(version))

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        with translating(f"tag {name!r} version {version}"):
            for key, value in tags.items():
                self.client.set_model_version_tag(name, str(version), key, str(value))

    def versions(self, name: str) -> list[VersionRecord]:
        """Every version of `name` (empty when the model is not registered)."""
        with translating(f"search versions of {name!r}"):
            found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((_version(v) for v in found), key=lambda v: int(v.version))
