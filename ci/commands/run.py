"""`ci run [PIPELINE]`: load the project's pipeline (or a built-in) and run it with a
release handle; also the entry of a project's own `python -m pipelines.NAME`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ci.adapters.state_dir import check_state_dir
from ci.core import critical_path
from ci.core.config import Config
from ci.core.errors import CIError
from ci.core.platforms import Platform
from ci.core.redact import redact
from ci.pipelines import loader
from ci.pipelines.handle import Release
from ci.pipelines.loader import LoadedPipeline
from ci.pipelines.ports import Ports


def choose_engine(engine: str | None, environ: Mapping[str, str]) -> str:
    """`dagger run` sets a session in the environment: use Dagger unless told otherwise."""
    if engine:
        return engine
    if environ.get("DAGGER_SESSION_PORT") and environ.get("DAGGER_SESSION_TOKEN"):
        return "dagger"
    return "docker"


def run_pipeline(
    config: Config,
    pipeline: str | LoadedPipeline = "release",
    *,
    engine: str | None = None,
    only: list[Platform] | None = None,
    dry_run: bool = False,
    force: bool = False,
    environ: Mapping[str, str] | None = None,
    live: bool | None = None,
    ports: Ports | None = None,
) -> tuple[int, Release, CIError | None]:
    """Run the pipeline; returns (exit code, the run with every stage's data, the error)."""
    check_state_dir(config.state_path)
    from rich.console import Console

    from ci.reports.summary import Progress

    env = dict(os.environ if environ is None else environ)
    found = loader.load(pipeline, config.root_path) if isinstance(pipeline, str) else pipeline
    progress = Progress(Console(stderr=True), live=live)
    run = Release(config=config, environ=env, engine=choose_engine(engine, env), only=only,
                  dry_run=dry_run, force=force, progress=progress, ports=ports or Ports(),
                  pipeline=found.name)
    error: CIError | None = None
    with progress:
        try:
            rc = found.fn(run)
            code = 0 if rc is None else int(rc)
        except CIError as exc:
            error, code = exc, exc.exit_code
    write_reports(run, env, progress)
    return code, run, error


def write_reports(run: Release, environ: Mapping[str, str], progress: object = None) -> None:
    """CI-system reports (GitHub step summary/outputs, GitLab junit/dotenv/metrics)."""
    if run.verdict is None:
        return
    from ci.reports import github, gitlab

    spans = list(getattr(progress, "spans", ()))
    o = run.outcome_value
    digest = o.published.digest if o.published else None
    github.publish_report(
        run.verdict, environ=environ, spans=spans, index_digest=digest,
        tags=o.published.tags if o.published else (),
        deploy_commit=o.deployed.commit if o.deployed else None,
        promoted_version=o.promoted.version if o.promoted else None,
    )
    if environ.get("GITLAB_CI") == "true" or environ.get("MACI_REPORT_DIR"):
        folder = Path(environ.get("MACI_REPORT_DIR") or run.run_dir)
        gitlab.write_reports(run.verdict, folder, index_digest=digest,
                             model_version=run.model_version, spans=spans)


def show_run(result: Release, console: Any, *, as_json: bool, dry_run: bool) -> None:
    """What `ci run` prints: the outcome JSON (with the critical path), `UP TO DATE`, or the
    summary (plus the dry run's would-be digest and deploy diff)."""
    spans = list(getattr(result.progress, "spans", ()))  # what the console Progress recorded
    if as_json:
        path = critical_path.critical_path(spans)
        data = {**result.outcome(), "critical_path": path.to_json() if path else None}
        sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")
    elif result.up_to_date is not None:
        rec = result.up_to_date
        sys.stdout.write(
            f"UP TO DATE {rec.image}@{rec.index_digest}\n"
            f"  released by run {rec.run_id}: tags {', '.join(rec.tags)}; "
            f"deploy {rec.deploy_commit or '-'}; model version {rec.model_version or '-'}\n"
            "  nothing changed since (source, config, model inputs); --force reruns every stage\n")
    elif result.verdict is not None:
        from ci.reports.summary import print_summary

        o = result.outcome_value
        print_summary(console, result.verdict, o, spans)
        if dry_run and o.published is not None:
            sys.stdout.write(f"DRY RUN: nothing was published, deployed or promoted; the index "
                             f"would be {o.published.digest}\n")
        if o.deployed is not None and o.deployed.dry_run:
            sys.stdout.write(redact(o.deployed.diff))
