"""The model stage: train (or reuse), gate vs the alias, register; promotion is separate.

Ordering is the product's promise: `train_and_gate` never moves the alias; only a candidate
that PASSED the gate becomes a model version (a rejected one stays a run tagged
`maci.gate=failed`, so `models:/<name>/latest` never names a rejected model); `promote` is
called by the release only after the deploy commit landed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from ci.adapters import tracking
from ci.adapters.mlflow_gate import mlflow_failures
from ci.core import gate
from ci.core.config import Config, ModelConfig
from ci.core.errors import ConfigError, ConfigProblem, GateFailed
from ci.core.model import MaterializedModel, ModelStageResult, PromoteResult
from ci.core.results import SourceInfo
from ci.stages import artifact
from ci.stages.training import train


def _model(config: Config) -> ModelConfig:
    if config.model is None:
        raise ConfigError([ConfigProblem("model", None, "no [model] table in the config")])
    return config.model


def train_and_gate(
    config: Config,
    source: SourceInfo,
    run_id: str,
    *,
    environ: Mapping[str, str] | None = None,
    client: tracking.Tracking | None = None,
    retrain: str = "",
) -> ModelStageResult:
    """Train or reuse, compare with the alias, tag the run, register a passing candidate.
    `retrain` names the flag that forces a new run ('--retrain', '--force'), '' to reuse."""
    started = time.monotonic()
    model = _model(config)
    mlflow = client or tracking.connect(config, environ)
    trained = train(config, mlflow, source, run_id, environ=environ, retrain=retrain)
    champion = mlflow.version_by_alias(model.registered_model, model.alias)
    champion_metrics = mlflow.run(champion.run_id).metrics if champion and champion.run_id else {}
    decision = gate.evaluate(
        model.thresholds, candidate_run_id=trained.run_id, candidate=trained.metrics,
        alias=model.alias, champion_version=champion.version if champion else None,
        champion_run_id=champion.run_id if champion else None,
        champion_metrics=champion_metrics if champion else None, check=mlflow_failures,
    )
    mlflow.set_tags(trained.run_id, decision.tags())
    version = None
    new_version = False
    if decision.passed:
        gate_tags = {
            "maci.gate": decision.status,
            "maci.gate.champion_version": decision.champion_version or "",
            "maci.gate.deltas": json.dumps(decision.deltas, sort_keys=True),
            "maci.pipeline.run_id": run_id,
        }
        version = mlflow.version_for_run(model.registered_model, trained.run_id)
        if version is None:  # the handoff artifact is checked first: none, nothing registered
            handoff = artifact.check(config, mlflow, trained.run_id)
            version = mlflow.register(model.registered_model, trained.run_id, gate_tags | {
                "maci.run_id": trained.run_id,
                "maci.input_hash": trained.input_hash,
                "maci.source_sha": source.sha,
            } | handoff)
            new_version = True
        else:  # a reused run keeps its version; record what it was gated against this time
            if version.tags.get(artifact.ARTIFACT_TAG) != model.artifact.describe():
                gate_tags |= artifact.check(config, mlflow, trained.run_id,
                                            f"{version.uri} cannot be handed to the build")
            mlflow.set_version_tags(model.registered_model, version.version, gate_tags)
        mlflow.set_tags(trained.run_id, {"maci.registered_version": version.version})
    total = time.monotonic() - started
    return ModelStageResult(
        registered_model=model.registered_model, alias=model.alias, tracking_uri=mlflow.uri,
        training=trained, decision=decision,
        version=version.version if version else None,
        model_uri=version.uri if version else None, new_version=new_version,
        seconds={
            "total": round(total, 3),
            "script": trained.script_seconds,
            "overhead": round(total - trained.script_seconds, 3),
        },
    )


def promote(
    config: Config,
    version: str,
    deploy_commit: str,
    *,
    environ: Mapping[str, str] | None = None,
    client: tracking.Tracking | None = None,
) -> PromoteResult:
    """Move the alias to `version` and record the deploy commit on it (release calls this
    only after the deploy push). Refuses a version that did not pass the gate, or that was
    gated against another champion than the current one (a concurrent release won)."""
    model = _model(config)
    mlflow = client or tracking.connect(config, environ)
    target = mlflow.version(model.registered_model, version)
    if target.tags.get("maci.gate") != "passed":
        raise GateFailed(
            f"{model.registered_model} version {target.version} did not pass the gate "
            f"(maci.gate={target.tags.get('maci.gate', 'unset')}): not moving {model.alias!r}"
        )
    previous = mlflow.version_by_alias(model.registered_model, model.alias)
    current = previous.version if previous else ""
    gated = target.tags.get("maci.gate.champion_version", "")
    if current not in (gated, target.version):
        raise GateFailed(
            f"{model.alias!r} moved to version {current} after version {target.version} was "
            f"gated against {('version ' + gated) if gated else 'no champion'}: "
            "run the gate again before promoting"
        )
    changed = previous is None or previous.version != target.version
    mlflow.set_version_tags(model.registered_model, target.version, {
        "maci.deploy_commit": deploy_commit,
        "maci.promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "maci.previous_version": previous.version if previous else "",
    })
    mlflow.set_alias(model.registered_model, model.alias, target.version)
    return PromoteResult(
        registered_model=model.registered_model, alias=model.alias, version=target.version,
        previous_version=previous.version if previous else None, deploy_commit=deploy_commit,
        changed=changed,
    )


def materialize_model(
    config: Config,
    version: str,
    dest: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    client: tracking.Tracking | None = None,
) -> MaterializedModel:
    """Hand the version's `[model.artifact]` to the build: into `<build.context>/<dest>/`
    (the Dockerfile COPYs that folder), its bytes checked against the registered sha256."""
    _model(config)
    mlflow = client or tracking.connect(config, environ)
    return artifact.materialize(config, mlflow, version, dest)
