"""What the model stage produces, as data: the training run, the gate's stage result, the
materialized artifact and the alias move. Pure; the stage that makes them lives in stages/."""

from __future__ import annotations

from pydantic import Field

from ci.core.data import Frozen
from ci.core.gate import GateDecision


class TrainingResult(Frozen):
    """One training (or reuse): the run, its metrics and params, and where the time went."""

    run_id: str
    experiment_id: str
    input_hash: str
    reused: bool
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)
    script_seconds: float = 0.0
    overhead_seconds: float = 0.0
    message: str = ""
    reason: str = ""  # why it reused or trained, e.g. "retrained: env:FEATURES changed"


class ModelStageResult(Frozen):
    """What the release verdict records about the model: run, gate decision, version."""

    registered_model: str
    alias: str
    tracking_uri: str
    training: TrainingResult
    decision: GateDecision
    version: str | None = None
    model_uri: str | None = None
    new_version: bool = False
    seconds: dict[str, float] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.decision.passed and self.version is not None


class PromoteResult(Frozen):
    registered_model: str
    alias: str
    version: str
    previous_version: str | None
    deploy_commit: str
    changed: bool


class MaterializedModel(Frozen):
    """The registered version copied into the build context; its fields become build args
    (and, through them, image labels). `files` are relative to `directory`."""

    directory: str
    name: str
    version: str
    uri: str
    run_id: str
    sha256: str
    artifact: str = ""
    files: list[str] = Field(default_factory=list)

    def build_args(self) -> dict[str, str]:
        return {"MODEL_NAME": self.name, "MODEL_VERSION": self.version, "MODEL_URI": self.uri,
                "MODEL_SHA256": self.sha256}
