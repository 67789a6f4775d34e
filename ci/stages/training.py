"""Training: run the user's train command against an MLflow run we created, with lineage.

The run is created here (lineage tags first, so even a crashed training is traceable); the
command gets MLFLOW_TRACKING_URI + MLFLOW_RUN_ID and its params as MACI_PARAMS (JSON) and
MACI_PARAM_<NAME>. An input hash over code files, data identity and params lets an
unchanged rerun reuse the last FINISHED run instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

from ci.adapters import proc
from ci.adapters.tracking import HTTP_DEFAULTS, Tracking
from ci.core.config import Config, ModelConfig
from ci.core.errors import ConfigError, ConfigProblem, StepFailed, ToolMissing
from ci.core.model import TrainingResult
from ci.core.results import SourceInfo

HASH_VERSION = "1"
INPUT_HASH_TAG = "maci.input_hash"
SKIP_PARTS = {"__pycache__", ".git", ".maci", "mlruns", ".pytest_cache", ".mypy_cache"}
PYTHON_NAMES = {"python", "python3"}
LOG_ARTIFACT = "maci/train.log"


# ---------------------------------------------------------------- input hash (pure-ish)


def _files(workdir: Path, entry: str) -> list[Path]:
    path = workdir / entry
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(
            p for p in path.rglob("*")
            if p.is_file() and not SKIP_PARTS.intersection(p.relative_to(workdir).parts)
            and p.suffix not in {".pyc", ".pyo"}
        )
    raise ConfigError([ConfigProblem("model.inputs", entry,
                                     f"no such file or directory under {workdir}")])


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        raise ConfigError([ConfigProblem("model.inputs", f"pkg:{name}",
                                         "no such installed distribution")]) from None


def input_identity(
    workdir: Path, inputs: Sequence[str], params: Mapping[str, object], command: Sequence[str]
) -> dict[str, object]:
    """What the input hash covers: file contents (by relative path), `pkg:NAME` versions
    (data shipped inside a package, e.g. scikit-learn's datasets), params and the command."""
    files: dict[str, str] = {}
    packages: dict[str, str] = {}
    for entry in inputs:
        if entry.startswith("pkg:"):
            name = entry.removeprefix("pkg:").strip()
            packages[name] = _package_version(name)
            continue
        for path in _files(workdir, entry):
            rel = path.relative_to(workdir).as_posix() if path.is_relative_to(workdir) else str(path)
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "v": HASH_VERSION,
        "files": dict(sorted(files.items())),
        "packages": dict(sorted(packages.items())),
        "params": {k: params[k] for k in sorted(params)},
        "command": list(command),
    }


def input_hash(
    workdir: Path, inputs: Sequence[str], params: Mapping[str, object], command: Sequence[str]
) -> str:
    """sha256 of `input_identity`, canonical JSON (so key order and dict order never matter)."""
    identity = input_identity(workdir, inputs, params, command)
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------- lineage and environment


def lineage_tags(source: SourceInfo, pipeline_run_id: str, digest: str) -> dict[str, str]:
    """The run's lineage: MLflow's own source tags plus the `maci.*` namespace."""
    tags = {
        INPUT_HASH_TAG: digest,
        "maci.pipeline.run_id": pipeline_run_id,
        "maci.git.sha": source.sha,
        "maci.git.branch": source.branch,
        "maci.git.ref": source.ref,
        "maci.git.tag": source.tag,
        "maci.git.repository": source.repository_url,
        "maci.ci.provider": source.provider,
        "maci.ci.run_id": source.run_id,
        "maci.ci.run_url": source.run_url,
        "maci.ci.actor": source.actor,
        "mlflow.source.git.commit": source.sha,
        "mlflow.source.git.branch": source.branch,
        "mlflow.source.git.repoURL": source.repository_url,
        "mlflow.source.type": "JOB",
        "mlflow.source.name": "multiarch-ci",
    }
    return {k: v for k, v in tags.items() if v}


def param_env(params: Mapping[str, object]) -> dict[str, str]:
    """MACI_PARAMS (typed JSON) plus MACI_PARAM_<NAME> per param (for non-Python scripts)."""
    env = {"MACI_PARAMS": json.dumps(dict(params), sort_keys=True)}
    for key, value in params.items():
        name = re.sub(r"[^A-Za-z0-9]", "_", key).upper()
        env[f"MACI_PARAM_{name}"] = json.dumps(value) if isinstance(value, bool) else str(value)
    return env


def resolve_command(command: Sequence[str]) -> list[str]:
    """`python`/`python3` means the interpreter running ci: the one whose mlflow we record."""
    argv = list(command)
    if argv and argv[0] in PYTHON_NAMES:
        argv[0] = sys.executable
    return argv


def workdir_of(config: Config, model: ModelConfig) -> Path:
    return (config.root_path / model.workdir).resolve()


# ---------------------------------------------------------------- the step


def train(
    config: Config,
    tracking: Tracking,
    source: SourceInfo,
    pipeline_run_id: str,
    *,
    environ: Mapping[str, str] | None = None,
) -> TrainingResult:
    """Reuse the newest FINISHED run with the same input hash, else train in a new run.

    A failed command marks the run FAILED and raises StepFailed (exit code, stdout, stderr).
    """
    started = time.monotonic()
    model = _model(config)
    workdir = workdir_of(config, model)
    digest = input_hash(workdir, model.inputs, model.params, model.train_command)
    experiment_id = tracking.experiment_id(model.experiment or config.project.name)
    if model.inputs:
        for run in tracking.find_runs(experiment_id, {INPUT_HASH_TAG: digest}):
            return TrainingResult(
                run_id=run.run_id, experiment_id=experiment_id, input_hash=digest, reused=True,
                metrics=run.metrics, params=run.params, command=list(model.train_command),
                overhead_seconds=round(time.monotonic() - started, 3),
                message=f"reused run {run.run_id}: same input hash {digest[:12]}, no retraining",
            )
    argv = resolve_command(model.train_command)
    tags = lineage_tags(source, pipeline_run_id, digest) | {
        "maci.train.command": json.dumps(argv),
        "maci.train.python": platform.python_version(),
        "maci.train.executable": argv[0] if argv else "",
        "maci.train.platform": platform.platform(),
        "maci.train.workdir": str(workdir),
        "maci.train.mlflow": _safe_version("mlflow"),
    }
    run_id = tracking.create_run(experiment_id, tags, run_name=f"{config.project.name}-{pipeline_run_id}")
    tracking.log_params(run_id, model.params)
    base = dict(os.environ if environ is None else environ)
    env = base | param_env(model.params) | {
        "MLFLOW_TRACKING_URI": tracking.uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "MACI_INPUT_HASH": digest,
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
    }
    for key in ("MLFLOW_TRACKING_TOKEN", *HTTP_DEFAULTS):
        if key in os.environ:
            env.setdefault(key, os.environ[key])
    script_started = time.monotonic()
    try:
        result = proc.run(argv, cwd=workdir, env=env, timeout=model.timeout_seconds,
                          check=False, step="train")
    except KeyboardInterrupt:
        tracking.finish_run(run_id, "KILLED")
        raise
    except (StepFailed, ToolMissing) as exc:
        seconds = time.monotonic() - script_started
        code = "timeout" if isinstance(exc, StepFailed) else "not-found"
        _record_end(tracking, run_id, seconds, code, getattr(exc, "stdout", ""), exc.message)
        tracking.finish_run(run_id, "FAILED")
        raise
    script_seconds = time.monotonic() - script_started
    _record_end(tracking, run_id, script_seconds, result.returncode, result.stdout, result.stderr)
    if not result.ok:
        tracking.finish_run(run_id, "FAILED")
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
        raise StepFailed(
            f"train failed (exit {result.returncode}) in run {run_id}: {last[0]}",
            step="train", cmd=argv, returncode=result.returncode,
            stdout=result.stdout, stderr=result.stderr,
        )
    run = tracking.run(run_id)
    if run.status == "RUNNING":  # the script did not end its run; it exited 0, so it finished
        tracking.finish_run(run_id, "FINISHED")
    elif run.status != "FINISHED":
        raise StepFailed(f"train exited 0 but run {run_id} is {run.status}", step="train",
                         cmd=argv, returncode=0, stdout=result.stdout, stderr=result.stderr)
    total = time.monotonic() - started
    return TrainingResult(
        run_id=run_id, experiment_id=experiment_id, input_hash=digest, reused=False,
        metrics=run.metrics, params=run.params, command=argv,
        script_seconds=round(script_seconds, 3),
        overhead_seconds=round(total - script_seconds, 3),
        message=f"trained run {run_id} (input hash {digest[:12]}); the script took"
                f" {script_seconds:.1f} s",
    )


def _model(config: Config) -> ModelConfig:
    if config.model is None:
        raise ConfigError([ConfigProblem("model", None, "no [model] table: nothing to train")])
    return config.model


def _safe_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def _record_end(tracking: Tracking, run_id: str, seconds: float, code: int | str,
                stdout: str, stderr: str) -> None:
    """Duration and exit code as tags, the (redacted) output as an artifact of the run."""
    tracking.set_tags(run_id, {
        "maci.train.seconds": f"{seconds:.3f}",
        "maci.train.exit_code": str(code),
    })
    log = f"$ exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n"
    tracking.log_text(run_id, log, LOG_ARTIFACT)
