"""How MLflow failures and retries read, whichever client made the call (adapter).

Two clients talk to a tracking store: MLflow's own, and the small native one that creates
the run before the training script starts (`mlflow_rest`, `mlflow_sqlite`). Both must fail
the same way: one `TrackingError` naming the operation (and, when retries ran out, how many
attempts were made and why the last failed), and one warning line per HTTP retry in the
same words, e.g. `MLflow POST /api/2.0/mlflow/runs/create: attempt 2/3 after HTTP 503
(retrying in 0.0 s)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ci.adapters import retry
from ci.core import redact
from ci.core.errors import TrackingError

# One logger for every MLflow retry line (MLflow's client or ours): what users filter on.
log = logging.getLogger("ci.adapters.tracking")


def first_line(text: str, limit: int = 300) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def attempts_allowed() -> int:
    """How many attempts one HTTP call gets: MLflow's MLFLOW_HTTP_REQUEST_MAX_RETRIES + 1."""
    try:
        return max(1, int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")) + 1)
    except ValueError:
        return 8


def gave_up(text: str) -> str:
    """' after N attempts (last: CAUSE)' when MLflow's HTTP client retried the error until it
    gave up (the cause would often be cut off the end of MLflow's long message)."""
    attempts = attempts_allowed()
    cause = retry.classify(text)
    return f" after {attempts} attempts (last: {cause.reason})" if attempts > 1 and cause else ""


def failed(what: str, detail: str, after: str = "") -> TrackingError:
    """The one error every MLflow call raises: `MLflow <what> failed[ after…]: <detail>`."""
    return TrackingError(redact.redact(f"MLflow {what} failed{after}: {first_line(detail)}"))


@contextmanager
def translating(what: str) -> Iterator[None]:
    """Turn MLflow and network errors into TrackingError, naming the operation."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise failed(what, exc.message, gave_up(exc.message)) from exc
    except OSError as exc:  # requests' errors are OSErrors too
        raise failed(what, str(exc), gave_up(str(exc))) from exc


def retry_line(method: str, url: str, done: int, total: int, reason: str, pause: float) -> None:
    """`MLflow POST /api/...: attempt 2/3 after HTTP 503 (retrying in 0.0 s)`, after `done`
    failed attempts of `total`."""
    path = url.split("?", 1)[0]
    who = "MLflow" if "mlflow" in path else "HTTP"
    log.warning("%s", redact.redact(f"{who} {method} {path}: attempt {done + 1}/{total} after "
                                    f"{reason} (retrying in {pause:.1f} s)"))


def urllib3_pause(done: int, factor: float, cap: float = 120.0) -> float:
    """urllib3's backoff before the retry that follows `done` failures (jitter excluded):
    none after the first failure, then factor x 2^(done-1), capped."""
    return 0.0 if done <= 1 else min(cap, factor * 2.0 ** (done - 1))


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
    history = list(getattr(state, "history", None) or ())
    if not history:
        return
    last, done = history[-1], len(history)
    left = state.total if isinstance(state.total, int) else 0
    cause = retry.classify(str(last.error)) if last.error is not None else None
    reason = (f"HTTP {last.status}" if last.status else
              cause.reason if cause else type(last.error).__name__)
    pause = min(float(state.backoff_max), urllib3_pause(done, float(state.backoff_factor)))
    retry_line(str(last.method), url, done, done + 1 + left, reason, pause)


_RETRY_FILTER = _RetryLines()


def watch_retries() -> None:
    """Install `_RetryLines` once per process (urllib3's retry notes are DEBUG records)."""
    for name in ("urllib3.util.retry", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if _RETRY_FILTER not in logger.filters:
            logger.addFilter(_RETRY_FILTER)
    logging.getLogger("urllib3.util.retry").setLevel(logging.DEBUG)
