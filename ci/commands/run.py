"""`ci run [PIPELINE]`: load a pipeline from `pipelines/` and run it with a ReleaseRun handle."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from ci.config import Config
from ci.errors import CIError, UsageError
from ci.orchestrator import ReleaseRun
from ci.platforms import Platform


def load_pipeline(name: str) -> Callable[[ReleaseRun], int]:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise UsageError(f"pipeline name {name!r}: use a module name from pipelines/")
    try:
        module = importlib.import_module(f"pipelines.{name}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"pipelines.{name}", "pipelines"):
            raise UsageError(f"no pipeline {name!r} (expected pipelines/{name}.py)") from None
        raise
    fn = getattr(module, "pipeline", None)
    if not callable(fn):
        raise UsageError(f"pipelines/{name}.py has no pipeline(run) function")
    return fn  # type: ignore[no-any-return]


def choose_engine(engine: str | None, environ: Mapping[str, str]) -> str:
    """`dagger run` sets a session in the environment: use Dagger unless told otherwise."""
    if engine:
        return engine
    if environ.get("DAGGER_SESSION_PORT") and environ.get("DAGGER_SESSION_TOKEN"):
        return "dagger"
    return "docker"


def run_pipeline(
    config: Config,
    name: str = "release",
    *,
    engine: str | None = None,
    only: list[Platform] | None = None,
    dry_run: bool = False,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
    live: bool | None = None,
) -> tuple[int, ReleaseRun, CIError | None]:
    """Run the pipeline; returns (exit code, the run with every stage's data, the error)."""
    from rich.console import Console

    from ci.reports.summary import Progress

    env = dict(os.environ if environ is None else environ)
    fn = load_pipeline(name)
    progress = Progress(Console(stderr=True), live=live)
    run = ReleaseRun(config=config, environ=env, engine=choose_engine(engine, env), only=only,
                     dry_run=dry_run, force=force, progress=progress)
    error: CIError | None = None
    with progress:
        try:
            code = fn(run)
        except CIError as exc:
            error, code = exc, exc.exit_code
    write_reports(run, env)
    return code, run, error


def write_reports(run: ReleaseRun, environ: Mapping[str, str]) -> None:
    """CI-system reports (GitHub step summary/outputs, GitLab junit/dotenv/metrics)."""
    if run.verdict is None:
        return
    spans: Any = run.progress.spans if run.progress else ()
    digest = run.published.digest if run.published else None
    tags = run.published.tags if run.published else ()
    version = run.model.version if run.model is not None else None
    from ci.reports import github, gitlab

    github.publish_report(
        run.verdict, environ=environ, spans=spans, index_digest=digest, tags=tags,
        deploy_commit=run.deployed.commit if run.deployed else None,
        promoted_version=run.promoted.version if run.promoted else None,
    )
    if environ.get("GITLAB_CI") == "true" or environ.get("MACI_REPORT_DIR"):
        from pathlib import Path

        folder = Path(environ.get("MACI_REPORT_DIR") or run.run_dir)
        gitlab.write_reports(run.verdict, folder, index_digest=digest, model_version=version,
                             spans=spans)
