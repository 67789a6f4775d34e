"""The job history, `<state_dir>/history.json`: every finished platform job's total and step
seconds, read back at plan time to predict job times (core/prediction).

Best effort by design: a missing file is no history, an unreadable one is no history plus one
warning line, and a failed write is one warning line — a prediction never fails a run.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from ci.core.config import Config
from ci.core.plan import Plan
from ci.core.prediction import (
    HISTORY_RUNS,
    HISTORY_SCHEMA,
    History,
    JobRecord,
    appended,
    record_of,
    with_predictions,
)
from ci.core.results import PlatformResult

HISTORY_FILE = "history.json"
log = logging.getLogger(__name__)


def path_for(state_path: Path) -> Path:
    return state_path / HISTORY_FILE


def _read(path: Path) -> tuple[list[JobRecord], str]:
    """The recorded runs and, for a file that cannot be used, why ("" when fine or missing)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], ""
    except (OSError, UnicodeDecodeError) as exc:
        return [], f"cannot read it: {exc}"
    try:
        history = History.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return [], f"not a history file: {where + ': ' if where else ''}{first['msg']}"
    if history.schema_version != HISTORY_SCHEMA:
        return [], f"schema {history.schema_version}, this ci reads {HISTORY_SCHEMA}"
    return list(history.runs), ""


def load(state_path: Path) -> list[JobRecord]:
    """The recorded runs, oldest first; [] (one warning line) for a file that cannot be used."""
    path = path_for(state_path)
    runs, why = _read(path)
    if why:
        log.warning("job history %s ignored (%s)", path, why)
    return runs


def write(state_path: Path, runs: Sequence[JobRecord]) -> None:
    """Atomically (temp file, fsync, rename): a crash leaves the old file or the new one."""
    path = path_for(state_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(History(runs=list(runs)).model_dump_json(indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def record(state_path: Path, results: Sequence[PlatformResult],
           limit: int = HISTORY_RUNS) -> None:
    """Append the jobs that ran (each key keeps its last `limit` runs); never raises for I/O."""
    new = [rec for rec in map(record_of, results) if rec is not None]
    if not new:
        return
    path = path_for(state_path)
    runs, why = _read(path)
    try:
        write(state_path, appended(runs, new, limit))
    except OSError as exc:
        log.warning("job history %s not written: %s", path, exc)
        return
    if why:
        log.warning("job history %s was unusable (%s): started anew", path, why)


def predicted(config: Config, plan: Plan) -> Plan:
    """The plan with each job's predicted time from this state dir's history."""
    return with_predictions(plan, load(config.state_path))
