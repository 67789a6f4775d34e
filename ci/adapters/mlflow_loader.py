"""MLflow's own client, imported while the parent has nothing else to do (adapter).

`import mlflow` costs ~2 s (3-6 s on a loaded 2-core runner), far more than every call the
model stage makes. While the training script runs, `ci` only waits for it: `start()` spends
that wait importing MLflow on a thread (the GIL is free while the main thread waits for the
child), opening the store and importing what the gate and the artifact check need, so the
first call after the script finds everything loaded. The thread runs at the lowest CPU
priority (Linux, where its priority can be given back): the import takes the cores the
training (and a tracking server on the same host) leave idle, never the training's own;
the moment a call waits for it, it gets its priority back. Without `start()` the first call
loads MLflow in the caller's thread, as before.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

from ci.adapters.mlflow_errors import translating
from ci.core.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
# what the calls after the script import on first use: the gate (MetricThreshold and
# validate_evaluation_results), the entities of log_batch and logged models, artifact repos
IDLE_NICE = 19  # the import thread's nice value while the script runs
WARM_MODULES = ("mlflow.models", "mlflow.models.evaluation", "mlflow.models.evaluation.validation",
                "mlflow.store.artifact.artifact_repository_registry")


def _lower(tid: int) -> int | None:
    """Put the thread at IDLE_NICE if its priority can be given back when someone waits for
    it (raising a priority needs CAP_SYS_NICE or RLIMIT_NICE: tried with one step first, so
    an unprivileged `ci` never strands its import at the lowest priority); the old value."""
    try:
        old = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, old + 1)
        os.setpriority(os.PRIO_PROCESS, tid, old)
        os.setpriority(os.PRIO_PROCESS, tid, IDLE_NICE)
    except OSError:
        return None
    return old


def _renice(tid: int | None, nice: int | None) -> None:
    """Give the import thread its priority back (`_lower` checked that it may)."""
    if tid is not None and nice is not None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)


class Loader:
    """MLflow's client for one tracking URI, loaded at most once."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._client: MlflowClient | None = None
        self._error: BaseException | None = None
        self._tid: int | None = None  # the import thread (Linux), and its priority before
        self._nice: int | None = None
        self._waiting = False  # someone waits for the client: no lowered priority any more

    @property
    def loaded(self) -> bool:
        return self._client is not None

    def start(self) -> None:
        """Begin loading on a daemon thread (idempotent); `client()` waits for it."""
        with self._lock:
            if self._thread is not None or self._client is not None:
                return
            self._thread = threading.Thread(target=self._background, daemon=True,
                                            name="maci-mlflow-import")
            self._thread.start()

    def client(self) -> MlflowClient:
        """The client: loaded here unless `start()` began it; its load error re-raised."""
        if self._client is None:
            with self._lock:
                thread = self._thread
                if thread is None and self._client is None:
                    self._load(warm=False)
                self._waiting = True
                if thread is not None and thread.is_alive():  # we wait for it now: full speed
                    _renice(self._tid, self._nice)
            if thread is not None:
                thread.join()
        client, error = self._client, self._error
        if error is not None:
            raise error
        if client is None:  # unreachable: a load sets the client or the error
            raise TrackingError(f"MLflow's client for {self.uri} did not load")
        return client

    def _background(self) -> None:
        """The thread: at the lowest CPU priority, so the import takes only CPU the training
        script (and a tracking server on the same host) leave idle, then `_load`."""
        with self._lock:
            if sys.platform.startswith("linux") and not self._waiting:  # a thread id names
                self._tid = threading.get_native_id()  # that thread alone on Linux
                self._nice = _lower(self._tid)
        self._load(warm=True)

    def _load(self, warm: bool) -> None:
        try:
            from mlflow import MlflowClient

            for noisy in ("mlflow", "alembic"):  # after the import: it sets mlflow's to INFO
                logging.getLogger(noisy).setLevel(logging.WARNING)  # migrations, "validation passed"
            with translating(f"connect to {self.uri}"):
                client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        except BaseException as exc:  # re-raised by client() in the caller's thread
            self._error = exc
            return
        if warm:
            self._warm(client)
        self._client = client

    def _warm(self, client: MlflowClient) -> None:
        """Import what the calls after the script need and, on a local store, open it (its
        engine and schema check). A failure here is not an error: the real call reports it."""
        try:
            for name in WARM_MODULES:
                importlib.import_module(name)
            if not self.uri.startswith(("http://", "https://")):
                client.search_experiments(max_results=1)
                client.search_registered_models(max_results=1)
        except Exception as exc:
            log.debug("warming MLflow's client up failed (the call will say why): %s", exc)
