"""The model artifact handoff: what the image gets from a registered version, checked.

`[model.artifact]` names a file or folder the training run logged (or the MLflow model
directory). Before a version is registered it must be there, and its sha256 becomes a
version tag; materializing downloads it again, refuses other bytes than the tagged ones,
and lands it in `<build.context>/<dest>/` beside `registered.json`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ci.adapters.tracking import Tracking, VersionRecord
from ci.core.config import Config, ModelArtifactConfig, ModelConfig
from ci.core.errors import ConfigError, ConfigProblem, StepFailed, TrackingError
from ci.core.model import MaterializedModel

SHA_TAG = "maci.model.sha256"
ARTIFACT_TAG = "maci.model.artifact"
REGISTERED_FILE = "registered.json"
STAGING_DIR = "handoff"


def tree_sha256(path: Path) -> str:
    """A file's sha256 (what `sha256sum` prints inside the image); a folder's is the sha256
    of its `sha256sum`-style listing by sorted relative path, so a rename counts too."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    lines = [f"{tree_sha256(p)}  {p.relative_to(path).as_posix()}\n"
             for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def dest_of(config: Config, artifact: ModelArtifactConfig) -> Path:
    """`<build.context>/<dest>`, resolved; a symlink out of the context is a config error."""
    context = (config.root_path / config.build.context).resolve()
    folder = (context / artifact.dest).resolve()
    if not folder.is_relative_to(context) or folder == context:
        raise ConfigError([ConfigProblem("model.artifact.dest", artifact.dest,
                                         f"resolves outside build.context {context}")])
    return folder


def _written(folder: Path, artifact: ModelArtifactConfig) -> list[Path]:
    """The files the last handoff into `folder` wrote, from its registered.json."""
    try:
        data = json.loads((folder / REGISTERED_FILE).read_text())
    except (OSError, ValueError):
        return []
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):  # written before `files` was recorded: one file
        files = [Path(artifact.artifact_path).name]
    return [folder / REGISTERED_FILE, *(folder / str(f) for f in files)]


def handed_off(config: Config) -> list[Path]:
    """What the last handoff wrote (so hashing `**` never counts our own output)."""
    if config.model is None:
        return []
    return _written(dest_of(config, config.model.artifact), config.model.artifact)


@contextmanager
def _staging(config: Config) -> Iterator[Path]:
    """A private download folder in the state dir, never inside the build context."""
    path = config.state_path / STAGING_DIR / uuid.uuid4().hex
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _location(mlflow: Tracking, artifact: ModelArtifactConfig, run_id: str,
              version: VersionRecord | None) -> str | None:
    if artifact.source == "run":
        return mlflow.run(run_id).artifact_uri or None
    if version is not None and version.source:
        return version.source
    return mlflow.logged_model_location(run_id)


def _fetch(mlflow: Tracking, artifact: ModelArtifactConfig, run_id: str,
           version: VersionRecord | None, staging: Path, then: str) -> Path:
    """Download the artifact, or StepFailed naming it and what did not happen (`then`)."""
    path = artifact.artifact_path
    what = f"{path} (model.artifact.path)" if path else "an MLflow model (model.artifact)"
    location = _location(mlflow, artifact, run_id, version)
    if location is None or mlflow.artifact_kind(location, path) is None:
        where = "its MLflow model" if artifact.source == "model" and path else "it"
        raise StepFailed(f"run {run_id[:12]} logged no {what} in {where}: {then}",
                         step="model artifact")
    return mlflow.download_from(location, path, staging)


def check(config: Config, mlflow: Tracking, run_id: str,
          then: str = "nothing registered") -> dict[str, str]:
    """Before registering: the artifact is there; its sha256 and spec as version tags."""
    artifact = _model(config).artifact
    with _staging(config) as staging:
        local = _fetch(mlflow, artifact, run_id, None, staging, then)
        return {SHA_TAG: tree_sha256(local), ARTIFACT_TAG: artifact.describe()}


def _model(config: Config) -> ModelConfig:
    if config.model is None:
        raise ConfigError([ConfigProblem("model", None, "no [model] table in the config")])
    return config.model


def _clear(folder: Path, previous: list[Path]) -> None:
    for path in previous:
        if path.is_file() and path.resolve().is_relative_to(folder):
            path.unlink()
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()


def materialize(config: Config, mlflow: Tracking, version: str,
                dest: Path | None = None) -> MaterializedModel:
    """Download the version's artifact into `<build.context>/<dest>/` (the Dockerfile COPYs
    that folder), with `registered.json` naming the exact version for the app. Refuses
    bytes that differ from the sha256 the version was registered with."""
    model = _model(config)
    artifact = model.artifact
    target = mlflow.version(model.registered_model, version)
    if not target.run_id:
        raise TrackingError(f"{target.uri} has no run: cannot find its {artifact.describe()}")
    folder = (dest or dest_of(config, artifact)).resolve()
    previous = _written(folder, artifact)
    with _staging(config) as staging:
        local = _fetch(mlflow, artifact, target.run_id, target, staging,
                       f"cannot hand {target.uri} to the build")
        sha = tree_sha256(local)
        recorded = target.tags.get(SHA_TAG, "")
        if target.tags.get(ARTIFACT_TAG) == artifact.describe() and recorded and recorded != sha:
            raise TrackingError(
                f"{target.uri}: {artifact.describe()} now has sha256 {sha[:12]}, the version "
                f"was registered with {recorded[:12]}: refusing to build other bytes")
        if not recorded or target.tags.get(ARTIFACT_TAG) != artifact.describe():
            mlflow.set_version_tags(target.name, target.version,
                                    {SHA_TAG: sha, ARTIFACT_TAG: artifact.describe()})
        folder.mkdir(parents=True, exist_ok=True)
        _clear(folder, previous)
        if local.is_file():
            shutil.copyfile(local, folder / local.name)
            files = [local.name]
        else:
            shutil.copytree(local, folder, dirs_exist_ok=True)
            files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                           if p.is_file())
    result = MaterializedModel(
        directory=str(folder), name=target.name, version=target.version, uri=target.uri,
        run_id=target.run_id, sha256=sha, artifact=artifact.describe(), files=files,
    )
    registered = result.model_dump(exclude={"directory"})
    (folder / REGISTERED_FILE).write_text(json.dumps(registered, indent=2) + "\n")
    return result
