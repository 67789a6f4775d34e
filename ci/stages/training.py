"""Training: run the user's train command against an MLflow run we created, with lineage.

The run is created here (lineage tags first, so even a crashed training is traceable); the
command gets MLFLOW_TRACKING_URI + MLFLOW_RUN_ID, its params as MACI_PARAMS (JSON) and
MACI_PARAM_<NAME>, and MACI_OUTPUT_DIR, whose metrics/params/artifacts the library logs
(train_outputs). `python` is the project's interpreter (train_env), or the command runs in
the `[model.container]` image (train_container); either is recorded on the run. An input
hash over code files, data identity, declared env vars and params lets an unchanged rerun
reuse the last FINISHED run instead of training again; the run records one short identity
per entry, so the next run can say which entry changed.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

from ci.adapters import proc, scratch
from ci.adapters.tracking import HTTP_DEFAULTS, RunRecord, Tracking
from ci.core import inputs as rules
from ci.core.config import Config, ModelConfig
from ci.core.errors import ConfigError, ConfigProblem, StepFailed, ToolMissing
from ci.core.model import TrainingResult
from ci.core.results import SourceInfo
from ci.core.training_config import CONTAINER_OUT, OUTPUT_DIR_ENV
from ci.stages import train_container, train_env, train_outputs
from ci.stages.artifact import handed_off
from ci.stages.inputs import InputSet, collect
from ci.stages.train_env import PYTHON_NAMES, Probe, Setup

INPUT_HASH_TAG = "maci.input_hash"
INPUT_ENTRIES_TAG = "maci.inputs"  # JSON entry → short identity: says WHICH entry changed
TAG_LIMIT = 5000  # MLflow's smallest tag value limit across stores
LOG_ARTIFACT = "maci/train.log"


# ---------------------------------------------------------------- input hash


def input_identity(
    workdir: Path, inputs: Sequence[str], params: Mapping[str, object], command: Sequence[str],
    *, environ: Mapping[str, str] | None = None, root: Path | None = None,
) -> dict[str, object]:
    """What the input hash covers: file contents (by relative path, from files, folders and
    globs), `env:NAME` values (hashed), `pkg:NAME` versions, params and the command."""
    return collect(workdir, inputs, params, command, root=root, environ=environ).identity


def input_hash(
    workdir: Path, inputs: Sequence[str], params: Mapping[str, object], command: Sequence[str],
    *, environ: Mapping[str, str] | None = None, root: Path | None = None,
) -> str:
    """sha256 of `input_identity`, canonical JSON (so key order and dict order never matter)."""
    return collect(workdir, inputs, params, command, root=root, environ=environ).digest


def model_inputs(config: Config, environ: Mapping[str, str] | None = None, *,
                 setup: Setup | None = None, seen: Probe | None = None) -> InputSet:
    """The project's model inputs as the training sees them (its environ, its workdir, its
    interpreter's `pkg:` versions), inside the project root, without the files the model
    handoff wrote. Without `seen`, a container training's `pkg:` entries stay unread (the
    image is built when training): a release fingerprint only, never a reuse decision."""
    model = _model(config)
    workdir = workdir_of(config, model)
    packages: dict[str, str] | None = None
    seen_by = ""
    names = [rules.entry_name(e) for e in model.inputs if rules.kind_of(e) == "pkg"]
    if names and setup is not None and seen is not None:
        packages, seen_by = train_env.pkg_versions(seen, setup)
    elif names and model.container is not None:
        packages = dict.fromkeys(names, "(read in the training image)")
    elif names:
        local = train_env.local_setup(config, model, workdir)
        packages, seen_by = train_env.pkg_versions(
            train_env.probe(local, names, workdir, environ), local)
    return collect(workdir, model.inputs, model.params, model.train_command,
                   root=config.root_path, environ=environ,
                   skip=[config.state_path, *handed_off(config)],
                   packages=packages, seen_by=seen_by)


def entries_tag(entries: Mapping[str, str]) -> str:
    """The per-entry identities as a run tag; params collapse into one if it gets too long."""
    text = json.dumps(dict(sorted(entries.items())), separators=(",", ":"))
    if len(text) <= TAG_LIMIT:
        return text
    kept = {k: v for k, v in entries.items() if not k.startswith("params.")}
    kept["params"] = rules.short({k: v for k, v in entries.items() if k.startswith("params.")})
    text = json.dumps(dict(sorted(kept.items())), separators=(",", ":"))
    return text if len(text) <= TAG_LIMIT else "{}"


def recorded_entries(tags: Mapping[str, str]) -> dict[str, str] | None:
    """The per-entry identities a run recorded (None: it recorded none, or unreadable)."""
    try:
        data = json.loads(tags[INPUT_ENTRIES_TAG])
    except (KeyError, ValueError):
        return None
    if not isinstance(data, dict) or not data:
        return None
    return {str(k): str(v) for k, v in data.items()}


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


def resolve_command(command: Sequence[str], python: str | None = None) -> list[str]:
    """`python`/`python3` → `python` (the training interpreter, `train_env.interpreter`),
    default the interpreter running ci; any other command stays as given."""
    argv = list(command)
    if argv and argv[0] in PYTHON_NAMES:
        argv[0] = python or sys.executable
    return argv


def train_argv(config: Config) -> list[str]:
    """The command as it will run (no image built, no interpreter asked): for fingerprints."""
    model = _model(config)
    if model.container is not None:
        return list(model.train_command)
    return train_env.local_setup(config, model, workdir_of(config, model)).argv


def environment(config: Config, model: ModelConfig, workdir: Path,
                environ: Mapping[str, str] | None) -> tuple[Setup, Probe]:
    """Where the command runs (the project's interpreter, or the image built for
    `[model.container]`) and what that interpreter reports: asked once per training."""
    setup = (train_container.build(config, model, environ) if model.container is not None
             else train_env.local_setup(config, model, workdir))
    return setup, train_env.probe(setup, train_env.probe_names(model), workdir, environ)


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
    retrain: str = "",
) -> TrainingResult:
    """Reuse the newest FINISHED run with the same input hash, else train in a new run;
    `retrain` (the flag's name, e.g. '--retrain') trains even when the hash is unchanged.

    A failed command marks the run FAILED and raises StepFailed (exit code, stdout, stderr).
    """
    started = time.monotonic()
    model = _model(config)
    workdir = workdir_of(config, model)
    reads_packages = any(rules.kind_of(e) == "pkg" for e in model.inputs)
    # `pkg:` entries are read BY the training interpreter (or image): ask it before hashing
    ready = environment(config, model, workdir, environ) if reads_packages else None
    found = model_inputs(config, environ, setup=ready[0] if ready else None,
                         seen=ready[1] if ready else None)
    digest = found.digest
    experiment_id = tracking.experiment_id(model.experiment or config.project.name)
    same = tracking.find_runs(experiment_id, {INPUT_HASH_TAG: digest}) if model.inputs else []
    if same and not retrain:
        run = same[0]
        reason = rules.reuse_reason(run.run_id, digest)
        return TrainingResult(
            run_id=run.run_id, experiment_id=experiment_id, input_hash=digest, reused=True,
            metrics=run.metrics, params=run.params, command=list(model.train_command),
            overhead_seconds=round(time.monotonic() - started, 3), message=reason,
            reason=reason,
        )
    reason = _retrain_reason(tracking, experiment_id, model, found, retrain, same)
    setup, seen = ready or environment(config, model, workdir, environ)
    argv = setup.argv
    tags = lineage_tags(source, pipeline_run_id, digest) | {
        INPUT_ENTRIES_TAG: entries_tag(found.entries),
        "maci.train.reason": reason,
        "maci.train.command": json.dumps(argv),
        "maci.train.executable": argv[0] if argv else "",
        "maci.train.platform": platform.platform(),
        "maci.train.workdir": str(workdir),
        "maci.train.mlflow": _safe_version("mlflow"),  # ci's client, which logs the outputs
    } | train_env.env_tags(setup, seen)
    run_id = tracking.create_run(experiment_id, tags, run_name=f"{config.project.name}-{pipeline_run_id}")
    tracking.log_params(run_id, model.params)
    scratch.sweep(config.state_path / "tmp", "train-out", "training output folder")
    with scratch.owned(config.state_path / "tmp", "train-out") as tmp:
        out = Path(tmp)
        tracking.load_while_waiting()  # MLflow's ~2 s import overlaps the script, not after it
        script_started = time.monotonic()
        try:
            result = _run(config, model, setup, run_id, experiment_id, digest, workdir, out,
                          tracking.uri, environ)
        except (StepFailed, ToolMissing) as exc:
            seconds = time.monotonic() - script_started
            code = "timeout" if isinstance(exc, StepFailed) else "not-found"
            _record_end(tracking, run_id, seconds, code, getattr(exc, "stdout", ""), exc.message)
            tracking.finish_run(run_id, "FAILED")
            raise
        except Exception:
            raise
        except BaseException as exc:  # Ctrl-C, SIGTERM, or the release's task cancelled
            # proc already stopped the command's whole process group; say so on the run
            _record_end(tracking, run_id, time.monotonic() - script_started, "interrupted",
                        "", f"training stopped: {type(exc).__name__}")
            tracking.finish_run(run_id, "KILLED")
            raise
        script_seconds = time.monotonic() - script_started
        _record_end(tracking, run_id, script_seconds, result.returncode, result.stdout,
                    result.stderr)
        if not result.ok:
            tracking.finish_run(run_id, "FAILED")
            last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
            raise StepFailed(
                f"train failed (exit {result.returncode}) in run {run_id}: {last[0]}",
                step="train", cmd=argv, returncode=result.returncode,
                stdout=result.stdout, stderr=result.stderr,
            )
        try:
            train_outputs.log(tracking, run_id, experiment_id, out,
                              {k: str(v) for k, v in model.params.items()},
                              model.registered_model)
        except StepFailed as exc:
            tracking.finish_run(run_id, "FAILED")
            raise StepFailed(f"{exc.message} (run {run_id})", step=exc.step, cmd=argv,
                             returncode=0, stdout=result.stdout, stderr=result.stderr) from None
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
        message=f"{reason}: run {run_id} (input hash {digest[:12]}); the script took"
                f" {script_seconds:.1f} s in {setup.description}", reason=reason,
    )


def _run(config: Config, model: ModelConfig, setup: Setup, run_id: str, experiment_id: str,
         digest: str, workdir: Path, out: Path, uri: str,
         environ: Mapping[str, str] | None) -> proc.Result:
    """The command itself: here with the MLflow run in its env, or in the training image
    with only its params, the declared env:NAME inputs and MACI_OUTPUT_DIR=/out."""
    common = param_env(model.params) | {
        "MACI_INPUT_HASH": digest,
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
    }
    base = dict(os.environ if environ is None else environ)
    if setup.image:
        declared = {rules.entry_name(e) for e in model.inputs if rules.kind_of(e) == "env"}
        env = {k: base[k] for k in sorted(declared) if k in base} | common | {
            OUTPUT_DIR_ENV: CONTAINER_OUT, "PYTHONDONTWRITEBYTECODE": "1"}
        return train_container.run(setup, workdir, out, env, model.timeout_seconds, environ)
    env = base | common | {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        OUTPUT_DIR_ENV: str(out),
    }
    for key in ("MLFLOW_TRACKING_TOKEN", *HTTP_DEFAULTS):
        if key in os.environ:
            env.setdefault(key, os.environ[key])
    # own process group + PR_SET_PDEATHSIG: the training never outlives ci, even a SIGKILLed one
    return proc.run(setup.argv, cwd=workdir, env=env, timeout=model.timeout_seconds,
                    check=False, step="train", group=True)


def _retrain_reason(tracking: Tracking, experiment_id: str, model: ModelConfig,
                    found: InputSet, retrain: str, same: Sequence[RunRecord]) -> str:
    """Why this run trains, naming the entries that changed since the newest finished run."""
    if not model.inputs and not retrain:
        return "trained: model.inputs is empty, so nothing proves an earlier run still fits"
    previous = same[0] if same else next(iter(tracking.find_runs(experiment_id, {})), None)
    return rules.retrain_reason(
        forced_by=retrain, previous_run=previous.run_id if previous else None,
        previous_entries=recorded_entries(previous.tags) if previous else None,
        current=found.entries, same_hash=bool(same),
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
