"""The MLflow adapter: the only module that talks to a tracking server or store.

It fails closed: an unreachable server is a `TrackingError` within seconds (a probe with a
short timeout, then few HTTP retries), and every MLflow or network error is translated into
`TrackingError` here, so the model stage never half-publishes on a flaky server.

Two clients, one behaviour: before the training script, the calls that decide and create the
run (experiment, reuse search, new run, its params) go through a small native client of the
store (`mlflow_rest` over HTTP, `mlflow_sqlite` on the embedded store), because `import
mlflow` costs ~2 s (3-6 s on a loaded runner) and nothing else could overlap it there. When
the script starts, `load_while_waiting` imports MLflow on a thread (`mlflow_loader`), and
MLflow's own client makes every later call. A store the native clients do not cover (another
scheme, an unknown sqlite schema, MLflow auth plugins) gets MLflow's client from the start.

Retries: MLflow's own HTTP client retries every REST and artifact call (any method) on
connection errors, 408/429/5xx; `HTTP_DEFAULTS` bounds it, the native REST client follows the
same rules, and each retry is one visible log line (`mlflow_errors`). Our own retry
(`ci.adapters.retry`) covers the one call MLflow does not retry: the /health probe.
"""

from __future__ import annotations

import os
import posixpath
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ci.adapters import retry
from ci.adapters.mlflow_errors import translating, watch_retries
from ci.adapters.mlflow_loader import Loader
from ci.adapters.mlflow_rest import RestPreflight
from ci.adapters.mlflow_sqlite import SqlitePreflight
from ci.adapters.tracking_records import Preflight, RunRecord, VersionRecord, str_dict
from ci.core import redact
from ci.core.config import Config
from ci.core.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["HTTP_DEFAULTS", "RunRecord", "Tracking", "VersionRecord", "connect", "probe"]

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
    both from os.environ, and the training subprocess inherits them. MLflow itself is loaded
    here only when no native client covers the store (see the module docstring).
    """
    env = os.environ if environ is None else environ
    uri = config.tracking_uri()
    token = _token(config, env)
    if token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, env.get(key, value))
    artifact_root: str | None = None
    preflight: Preflight | None = None
    if uri.startswith(("http://", "https://")):
        watch_retries()
        probe(uri, token, policy=retry.Policy.from_env(env))
        preflight = RestPreflight.for_uri(uri)
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"cannot create the embedded MLflow store {db}: {exc}") from None
        artifact_root = (db.parent / "mlartifacts").as_uri()
        preflight = SqlitePreflight.for_uri(uri)
    # Ending a run over HTTP makes MLflow print "View run … at: …" to stdout, which would
    # corrupt `ci … --json` (and gate.json in CI templates): links go in our own output instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    loader = Loader(uri)
    if preflight is None:
        loader.client()  # MLflow's client does every call: its errors belong to connect
    return Tracking(loader, uri, artifact_root, preflight)


def _version(mv: Any) -> VersionRecord:
    return VersionRecord(
        name=str(mv.name), version=str(mv.version), run_id=str(mv.run_id or ""),
        source=str(mv.source or ""), tags=str_dict(mv.tags),
    )


class Tracking:
    """A connected tracking store plus the operations the model stage uses."""

    def __init__(self, loader: Loader, uri: str, artifact_root: str | None = None,
                 preflight: Preflight | None = None) -> None:
        self.loader = loader
        self.uri = uri
        self.artifact_root = artifact_root
        self._preflight = preflight

    @property
    def client(self) -> MlflowClient:
        """MLflow's client (waits for a load `load_while_waiting` began)."""
        return self.loader.client()

    def load_while_waiting(self) -> None:
        """Called as the parent starts waiting for the training script: MLflow loads on a
        thread meanwhile and, from now on, serves every call (after the script, MLflow's
        own client does what MLflow would, with nothing for the native one to copy)."""
        if self._preflight is not None:
            self._preflight.close()
            self._preflight = None
        self.loader.start()

    def _native(self) -> Preflight | None:
        """The native client while it may answer: before the script, and only until MLflow's
        client is loaded (a store only MLflow could open loads it early: it then does all)."""
        if self._preflight is not None and self.loader.loaded:
            self._preflight.close()
            self._preflight = None
        return self._preflight

    @contextmanager
    def _mlflow(self, what: str) -> Iterator[MlflowClient]:
        """MLflow's client for one operation, its errors as TrackingError naming `what`."""
        client = self.client  # loaded before `translating` imports from mlflow
        with translating(what):
            yield client

    # ------------------------------------------------------------ experiments and runs

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created on first use (artifacts beside an embedded store)."""
        native = self._native()
        if native is not None and (known := native.experiment_id(name)) is not None:
            return known
        with self._mlflow(f"get experiment {name!r}") as client:
            found = client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            return str(client.create_experiment(name, artifact_location=self.artifact_root))

    def find_runs(self, experiment_id: str, tags: Mapping[str, str], status: str = "FINISHED",
                  limit: int = 1) -> list[RunRecord]:
        """Newest runs carrying all `tags` with the given status."""
        native = self._native()
        if native is not None and (runs := native.find_runs(experiment_id, tags, status,
                                                            limit)) is not None:
            return runs
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        clauses.append(f"attributes.status = '{status}'")
        with self._mlflow("search runs") as client:
            found = client.search_runs(
                [experiment_id], " and ".join(clauses),
                order_by=["attributes.start_time DESC"], max_results=limit,
            )
        return [self._record(r) for r in found]

    def create_run(self, experiment_id: str, tags: Mapping[str, str], run_name: str) -> str:
        native = self._native()
        if native is not None and (run_id := native.create_run(experiment_id, tags,
                                                               run_name)) is not None:
            return run_id
        with self._mlflow("create run") as client:
            run = client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        values = {k: str(v) for k, v in params.items()}
        native = self._native()
        if native is not None and native.log_params(run_id, values):
            return
        with self._mlflow("log params") as client:
            from mlflow.entities import Param

            client.log_batch(run_id, params=[Param(k, v) for k, v in values.items()])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        with self._mlflow("set run tags") as client:
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, run_id: str, text: str, path: str) -> None:
        with self._mlflow(f"log artifact {path}") as client:
            client.log_text(run_id, text, path)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Metrics a script wrote to MACI_OUTPUT_DIR/metrics.json, at step 0, in batches."""
        import time

        with self._mlflow("log metrics") as client:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
            for start in range(0, len(items), 500):
                client.log_batch(run_id, metrics=items[start:start + 500])

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        """A folder's files as run artifacts at the same relative paths."""
        with self._mlflow(f"log artifacts of {folder.name}") as client:
            client.log_artifacts(run_id, str(folder))

    def log_model_dir(self, run_id: str, experiment_id: str, folder: Path, name: str) -> str:
        """A READY logged model of the run from `folder` (what `register` needs), for a
        script that logged files but no MLflow model; returns its id."""
        with self._mlflow(f"log model {name!r}") as client:
            from mlflow.entities import LoggedModelOutput

            model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id)
            client.log_model_artifacts(model.model_id, str(folder))
            client.finalize_logged_model(model.model_id, "READY")
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        return str(model.model_id)

    def finish_run(self, run_id: str, status: str) -> None:
        with self._mlflow(f"mark run {status}") as client:
            client.set_terminated(run_id, status)

    def run(self, run_id: str) -> RunRecord:
        with self._mlflow(f"get run {run_id}") as client:
            return self._record(client.get_run(run_id))

    @staticmethod
    def _record(run: Any) -> RunRecord:
        return RunRecord(
            run_id=str(run.info.run_id), experiment_id=str(run.info.experiment_id),
            status=str(run.info.status),
            metrics={str(k): float(v) for k, v in (run.data.metrics or {}).items()},
            params=str_dict(run.data.params), tags=str_dict(run.data.tags),
            artifact_uri=str(run.info.artifact_uri or ""),
        )

    def logged_model_id(self, run_id: str) -> str | None:
        """The model the run logged (MLflow 3 LoggedModel); the newest step if several."""
        with self._mlflow(f"get run {run_id}") as client:
            run = client.get_run(run_id)
        outputs = getattr(run, "outputs", None)
        models = list(getattr(outputs, "model_outputs", None) or [])
        if not models:
            return None
        return str(max(models, key=lambda m: m.step).model_id)

    def download(self, run_id: str, path: str, dest: Path) -> Path:
        """One run artifact into `dest` (a folder); returns the local file."""
        dest.mkdir(parents=True, exist_ok=True)
        with self._mlflow(f"download artifact {path} of run {run_id}") as client:
            return Path(client.download_artifacts(run_id, path, str(dest)))

    def logged_model_location(self, run_id: str) -> str | None:
        """Where the run's logged MLflow model keeps its files (None: it logged none)."""
        model_id = self.logged_model_id(run_id)
        if model_id is None:
            return None
        with self._mlflow(f"get the model of run {run_id}") as client:
            return str(client.get_logged_model(model_id).artifact_location)

    def artifact_kind(self, location: str, path: str) -> Literal["file", "dir"] | None:
        """Whether `path` ('' = all of it) exists under an artifact location, and as what."""
        parent = posixpath.dirname(path)
        with self._mlflow(f"list artifacts of {location}"):
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

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
        dest.mkdir(parents=True, exist_ok=True)
        with self._mlflow(f"download {path or 'the artifacts'} from {location}"):
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            repo: Any = get_artifact_repository(artifact_uri=location, tracking_uri=self.uri)
            return Path(repo.download_artifacts(path, str(dest)))

    # ------------------------------------------------------------ registry

    def version_for_run(self, name: str, run_id: str) -> VersionRecord | None:
        """An existing version of `name` built from `run_id` (a reused run keeps its version)."""
        with self._mlflow(f"search versions of {name!r}") as client:
            found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        versions = sorted((_version(v) for v in found), key=lambda v: int(v.version))
        return versions[-1] if versions else None

    def register(self, name: str, run_id: str, tags: Mapping[str, str]) -> VersionRecord:
        """A new version of `name` from the model the run logged, carrying `tags`."""
        model_id = self.logged_model_id(run_id)
        if model_id is None:
            raise TrackingError(f"run {run_id} logged no model: nothing to register as {name!r}")
        with self._mlflow(f"register {name!r}") as client:
            from mlflow.exceptions import MlflowException

            try:
                client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
            # The artifact location, not `models:/<id>`: MLflow's sqlite registry resolves
            # `models:/` through the process-global tracking URI, not this client's.
            location = client.get_logged_model(model_id).artifact_location
            mv = client.create_model_version(
                name, location, run_id=run_id, tags=dict(tags), model_id=model_id,
            )
        return _version(mv)

    def version(self, name: str, version: str) -> VersionRecord:
        with self._mlflow(f"get {name!r} version {version}") as client:
            return _version(client.get_model_version(name, str(version)))

    def version_by_alias(self, name: str, alias: str) -> VersionRecord | None:
        """The version behind `alias`, or None when the model or the alias does not exist yet."""
        with self._mlflow(f"get alias {alias!r} of {name!r}") as client:
            from mlflow.exceptions import MlflowException

            try:
                model = client.get_registered_model(name)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise
            aliases = dict(getattr(model, "aliases", None) or {})
        if alias not in aliases:
            return None
        return self.version(name, str(aliases[alias]))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        with self._mlflow(f"set alias {alias!r} of {name!r} to {version}") as client:
            client.set_registered_model_alias(name, alias, str(version))

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        with self._mlflow(f"tag {name!r} version {version}") as client:
            for key, value in tags.items():
                client.set_model_version_tag(name, str(version), key, str(value))

    def versions(self, name: str) -> list[VersionRecord]:
        """Every version of `name` (empty when the model is not registered)."""
        with self._mlflow(f"search versions of {name!r}") as client:
            found = client.search_model_versions(f"name = '{name}'")
        return sorted((_version(v) for v in found), key=lambda v: int(v.version))
