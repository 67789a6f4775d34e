"""The embedded sqlite store, read and written directly for the calls made before the
training script (adapter).

On the embedded store the run must exist before the script starts, and MLflow's client
costs a ~2 s import (3-6 s on a loaded runner) before its first call: so the experiment
lookup, the reuse search, the new run and its first params are plain SQL here, and MLflow's
client (imported on a thread while the script runs) does everything after. This is a copy of
what MLflow's SqlAlchemyStore does for those four calls, so it is used only where the copy is
exact: a store whose schema revision is one of `SCHEMAS` (the tables the SQL below was
checked against; tests/integration/test_preflight.py fails when MLflow's head moves), an
existing active experiment, names and values MLflow would accept, and a run this process
created. Anything else (a new store, an unknown revision, a bad name) answers None and
MLflow's own client does the call, with MLflow's own errors.
"""

from __future__ import annotations

import os
import posixpath
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ci.adapters import mlflow_errors
from ci.adapters.tracking_records import RunRecord

# alembic heads of MLflow's tracking schema whose runs/tags/params tables the SQL here writes
SCHEMAS = frozenset({"dc11669786a5"})  # mlflow 3.17
KEY_LIMIT, TAG_LIMIT, PARAM_LIMIT, BATCH_LIMIT = 250, 8000, 6000, 100  # mlflow.utils.validation
RUN_NAME_TAG = "mlflow.runName"
_NAME = re.compile(r"^[/\w.\- :]*$")  # MLflow's validate_param_and_metric_name (POSIX)
BUSY_TIMEOUT = 20.0  # seconds; MLflow's own sqlite engine waits as long for a lock


def valid_key(name: str) -> bool:
    """A param or tag name MLflow accepts: its characters, and no path that normalizes to
    another name (MLflow's path_not_unique)."""
    norm = posixpath.normpath(name)
    return (len(name) <= KEY_LIMIT and bool(_NAME.match(name)) and norm == name
            and norm != "." and not norm.startswith(("..", "/")))


def artifact_uri(location: str, run_id: str) -> str | None:
    """`<experiment artifact location>/<run id>/artifacts`, as MLflow's append_to_uri_path
    builds it, for the two shapes it builds the same way: `file:///abs` and `/abs`."""
    if not (location.startswith(("file:///", "/")) and "?" not in location and "#" not in location):
        return None
    return f"{location.rstrip('/')}/{run_id}/artifacts"


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, the write lock taken up front (waits BUSY_TIMEOUT for it)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqlitePreflight:
    """The four pre-script calls as SQL on the store's file (see the module docstring)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._conn: sqlite3.Connection | None = None
        self._foreign = False  # a schema the SQL here was not checked against
        self._locations: dict[str, str] = {}
        self._fresh: set[str] = set()  # runs created here, no params logged yet

    @classmethod
    def for_uri(cls, uri: str) -> SqlitePreflight | None:
        if not uri.startswith("sqlite:///") or "?" in uri:
            return None
        if os.environ.get("MLFLOW_ENABLE_WORKSPACES") or os.environ.get("MLFLOW_WORKSPACE"):
            return None
        return cls(Path(uri.removeprefix("sqlite:///")))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self, what: str) -> sqlite3.Connection | None:
        """The store, or None when MLflow must open it (not there yet: MLflow creates the
        schema; a revision the SQL here was not checked against)."""
        if self._conn is not None or self._foreign:
            return self._conn
        if not self.db.is_file():
            return None
        try:
            conn = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=rw", uri=True,
                                   timeout=BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise mlflow_errors.failed(what, f"cannot open {self.db}: {exc}") from None
        try:
            revisions = {str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version")}
        except sqlite3.Error:
            revisions = set()
        if len(revisions) != 1 or not revisions <= SCHEMAS:
            conn.close()
            self._foreign = True
            return None
        self._conn = conn
        return conn

    # ------------------------------------------------------------ the calls

    def experiment_id(self, name: str) -> str | None:
        """An existing active experiment's id (MLflow creates a missing one)."""
        what = f"get experiment {name!r}"
        try:
            conn = self._db(what)
            if conn is None:
                return None
            rows = conn.execute("SELECT experiment_id, artifact_location, lifecycle_stage FROM "
                                "experiments WHERE name = ?", (name,)).fetchall()
        except sqlite3.Error as exc:
            raise mlflow_errors.failed(what, str(exc)) from None
        if len(rows) != 1 or rows[0][2] != "active" or not rows[0][1]:
            return None
        self._locations[str(rows[0][0])] = str(rows[0][1])
        return str(rows[0][0])

    def find_runs(self, experiment_id: str, tags: Mapping[str, str], status: str,
                  limit: int) -> list[RunRecord] | None:
        """MLflow's search_runs for `tags.k = 'v' and attributes.status = 's'`: active runs,
        newest start first, ties by run id."""
        if not experiment_id.isdigit():
            return None
        sql = ["SELECT run_uuid, experiment_id, status, artifact_uri FROM runs WHERE "
               "experiment_id = ? AND lifecycle_stage = 'active' AND status = ?"]
        args: list[object] = [int(experiment_id), status]
        for key, value in tags.items():
            sql.append('AND EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = runs.run_uuid AND '
                       't."key" = ? AND t.value = ?)')
            args += [key, value]
        sql.append("ORDER BY start_time DESC, run_uuid LIMIT ?")
        args.append(limit)
        try:
            conn = self._db("search runs")
            if conn is None:
                return None
            return [self._record(conn, row) for row in conn.execute(" ".join(sql), args)]
        except sqlite3.Error as exc:
            raise mlflow_errors.failed("search runs", str(exc)) from None

    @staticmethod
    def _record(conn: sqlite3.Connection, row: tuple[object, ...]) -> RunRecord:
        run_id = str(row[0])
        metrics = {str(k): float("nan") if nan else float(v) for k, v, nan in conn.execute(
            'SELECT "key", value, is_nan FROM latest_metrics WHERE run_uuid = ?', (run_id,))}
        params = {str(k): str(v) for k, v in conn.execute(
            'SELECT "key", value FROM params WHERE run_uuid = ?', (run_id,))}
        tags = {str(k): str(v) for k, v in conn.execute(
            'SELECT "key", value FROM tags WHERE run_uuid = ?', (run_id,))}
        return RunRecord(run_id=run_id, experiment_id=str(row[1]), status=str(row[2]),
                         metrics=metrics, params=params, tags=tags, artifact_uri=str(row[3] or ""))

    def create_run(self, experiment_id: str, tags: Mapping[str, str], run_name: str) -> str | None:
        """A RUNNING run with `tags` and its run name tag, as MLflow's create_run writes it."""
        location = self._locations.get(experiment_id)
        values = {k: str(v) for k, v in tags.items()}
        if values.setdefault(RUN_NAME_TAG, run_name) != run_name or not run_name:
            return None
        run_id = uuid.uuid4().hex
        uri = artifact_uri(location, run_id) if location else None
        if uri is None or len(run_name) > KEY_LIMIT or not all(
                valid_key(k) and len(v) <= TAG_LIMIT for k, v in values.items()):
            return None
        try:
            conn = self._db("create run")
            if conn is None:
                return None
            with _transaction(conn):
                active = conn.execute("SELECT lifecycle_stage FROM experiments WHERE "
                                      "experiment_id = ?", (int(experiment_id),)).fetchone()
                if active is None or active[0] != "active":
                    return None
                conn.execute(
                    "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name,"
                    " user_id, status, start_time, end_time, source_version, lifecycle_stage,"
                    " artifact_uri, experiment_id, deleted_time) VALUES"
                    " (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, '', 'active', ?, ?, NULL)",
                    (run_id, run_name, values.get("mlflow.user", "unknown"),
                     int(time.time() * 1000), uri, int(experiment_id)))
                conn.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?, ?, ?)',
                                 [(k, v, run_id) for k, v in values.items()])
        except sqlite3.Error as exc:
            raise mlflow_errors.failed("create run", str(exc)) from None
        self._fresh.add(run_id)
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, str]) -> bool:
        """The first params of a run created here (nothing to conflict with yet)."""
        values = {k: str(v) for k, v in params.items()}
        if run_id not in self._fresh or len(values) > BATCH_LIMIT or not all(
                valid_key(k) and len(v) <= PARAM_LIMIT for k, v in values.items()):
            return False
        try:
            conn = self._db("log params")
            if conn is None:
                return False
            with _transaction(conn):
                conn.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?, ?, ?)',
                                 [(k, v, run_id) for k, v in values.items()])
        except sqlite3.Error as exc:
            raise mlflow_errors.failed("log params", str(exc)) from None
        self._fresh.discard(run_id)
        return True
