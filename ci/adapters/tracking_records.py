"""What the tracking adapter hands back (runs, model versions), and what a preflight client
must offer, so every client of a tracking store answers with the same records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import Field

from ci.core.data import Frozen


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


def str_dict(data: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (data or {}).items()}


class Preflight(Protocol):
    """The calls that decide and create a run BEFORE the training script starts, without
    importing MLflow (~2 s): a small native client of the store (REST or sqlite). Each may
    answer None ("not something I do exactly as MLflow would"): MLflow's client does it."""

    def experiment_id(self, name: str) -> str | None: ...

    def find_runs(self, experiment_id: str, tags: Mapping[str, str], status: str,
                  limit: int) -> list[RunRecord] | None: ...

    def create_run(self, experiment_id: str, tags: Mapping[str, str],
                   run_name: str) -> str | None: ...

    def log_params(self, run_id: str, params: Mapping[str, str]) -> bool: ...

    def close(self) -> None: ...
