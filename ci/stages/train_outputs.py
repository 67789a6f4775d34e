"""Outputs a train command leaves in MACI_OUTPUT_DIR, logged by the library: a script (or
a container) needs no mlflow and no access to the tracking server.

`metrics.json` ({name: number}) → run metrics, `params.json` ({name: scalar}) → params,
`artifacts/**` → run artifacts at the same relative paths (so `[model.artifact] path`
finds them) and, when the script logged no MLflow model itself, a READY logged model of
those files (what registering a version needs). A bad file is one line naming it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ci.adapters.tracking import Tracking
from ci.core.errors import StepFailed
from ci.core.training_config import OUTPUT_DIR_ENV

METRICS_FILE = "metrics.json"
PARAMS_FILE = "params.json"
ARTIFACTS_DIR = "artifacts"
STEP = "train outputs"


@dataclass(frozen=True)
class Outputs:
    """What was found in the output dir (empty when the script used mlflow itself)."""

    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)  # relative posix paths

    @property
    def empty(self) -> bool:
        return not (self.metrics or self.params or self.artifacts)


def _bad(name: str, why: str) -> StepFailed:
    return StepFailed(f"train wrote a bad {name} in {OUTPUT_DIR_ENV}: {why}", step=STEP)


def _object(folder: Path, name: str) -> dict[str, object] | None:
    path = folder / name
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _bad(name, "not UTF-8 text") from None
    except ValueError as exc:
        raise _bad(name, f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _bad(name, f"want a JSON object {{name: value}}, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def read_metrics(folder: Path) -> dict[str, float]:
    """metrics.json as {name: finite number}; booleans, strings, NaN and infinity refused."""
    data = _object(folder, METRICS_FILE) or {}
    metrics = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(METRICS_FILE, f"metric {key!r} is {json.dumps(value)}, not a number")
        if not math.isfinite(value):
            raise _bad(METRICS_FILE, f"metric {key!r} is {value}, not a finite number")
        metrics[key] = float(value)
    return metrics


def read_params(folder: Path) -> dict[str, str]:
    """params.json as {name: text}, the way MLflow stores params; nested values refused."""
    data = _object(folder, PARAMS_FILE) or {}
    params = {}
    for key, value in data.items():
        if isinstance(value, (dict, list)) or value is None:
            raise _bad(PARAMS_FILE, f"param {key!r} is {json.dumps(value)}, not a scalar")
        params[key] = str(value)
    return params


def read(folder: Path) -> Outputs:
    """Everything the command wrote, validated before anything is logged."""
    art = folder / ARTIFACTS_DIR
    files = sorted(p.relative_to(art).as_posix() for p in art.rglob("*") if p.is_file()) \
        if art.is_dir() else []
    return Outputs(read_metrics(folder), read_params(folder), files)


def log(tracking: Tracking, run_id: str, experiment_id: str, folder: Path,
        logged_params: dict[str, str], model_name: str) -> Outputs:
    """Log what `read` found on the run; a param that contradicts one already logged (MLflow
    params never change) is refused naming both values."""
    found = read(folder)
    new = {}
    for key, value in found.params.items():
        if key in logged_params and logged_params[key] != value:
            raise _bad(PARAMS_FILE, f"param {key!r} = {value!r}, but the run already has "
                                    f"{logged_params[key]!r} (params are immutable)")
        if key not in logged_params:
            new[key] = value
    if new:
        tracking.log_params(run_id, new)
    if found.metrics:
        tracking.log_metrics(run_id, found.metrics)
    if found.artifacts:
        tracking.log_artifacts(run_id, folder / ARTIFACTS_DIR)
        if tracking.logged_model_id(run_id) is None:
            tracking.log_model_dir(run_id, experiment_id, folder / ARTIFACTS_DIR, model_name)
    return found
