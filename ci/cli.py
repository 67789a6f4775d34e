"""The `ci` command: parse, load config, call the library, map errors to exit codes.

No pipeline logic lives here. Heavy libraries (mlflow, dagger, python-on-whales) are
imported inside the commands that need them so `ci --help` and `ci plan` stay fast.
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import traceback
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ci.core import errors
from ci.core.redact import redact

if TYPE_CHECKING:
    from ci.pipelines.loader import LoadedPipeline

# The pipeline function a project's `python -m pipelines.NAME` hands to `run_main`.
_OVERRIDE: contextvars.ContextVar[LoadedPipeline | None] = contextvars.ContextVar(
    "maci_pipeline", default=None)

app = typer.Typer(
    name="ci",
    help="Gated multi-architecture releases: test and build per platform (native or qemu), "
    "gate on the model's metrics, publish and deploy only when everything passed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="ci.toml or pyproject.toml ([tool.ci]); default: search "
                 "from the current directory upwards", dir_okay=True),
]
PlatformOpt = Annotated[
    list[str] | None,
    typer.Option("--platform", "-p", help="Platform(s) to use instead of the config's "
                 "(repeat or comma-separate)"),
]
EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="Use only runners of this engine: docker|dagger")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _load(config: Path | None) -> Any:
    from ci.core import config as cfg

    return cfg.load(config, os.environ, Path.cwd())


def _locked(loaded: Any, command: str) -> AbstractContextManager[None]:
    """One release at a time per state dir (Busy, exit 1, naming the holder)."""
    from ci.adapters.lock import release_lock, timeout_from

    return release_lock(loaded.state_path, subject=loaded.project.image, command=command,
                        timeout=timeout_from(os.environ))


def _platforms(values: list[str] | None) -> Any:
    from ci.core import platforms

    return platforms.parse_many(values) if values else None


def _engine(value: str | None) -> str | None:
    if value not in (None, "docker", "dagger"):
        raise errors.UsageError(f"--engine: {value!r} is not one of docker, dagger")
    return value


def _echo_json(data: Any) -> None:
    sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")


@app.command()
def plan(
    config: ConfigOpt = None,
    platform: PlatformOpt = None,
    engine: EngineOpt = None,
    as_json: JsonOpt = False,
    matrix: Annotated[bool, typer.Option(
        "--matrix", help="Plan a multi-job pipeline (one job per platform, on other machines): "
        "refuse stores only one job could see, check the image against the deploy manifests")
    ] = False,
) -> int:
    """Show where each platform job would run (native, emulated or unavailable) and its time
    predicted from earlier runs. Exit 1 if any platform is unavailable, or the predicted
    emulated seconds exceed the emulation budget."""
    from ci.commands.plan import plan_json, plan_ok, print_predicted_plan, run_plan

    result = run_plan(_load(config), only=_platforms(platform), engine=_engine(engine),
                      matrix=matrix)
    if as_json:
        _echo_json(plan_json(result))
    else:
        print_predicted_plan(result, _console())
    return errors.EXIT_OK if plan_ok(result) else errors.EXIT_FAILED


@app.command()
def doctor(config: ConfigOpt = None, as_json: JsonOpt = False) -> int:
    """Report Docker daemons and their architecture, buildx, qemu binfmt handlers (flag F),
    Dagger CLI/session, and whether the configured registry and MLflow answer."""
    from ci.commands.doctor import run_doctor
    from ci.core import config as cfg

    loaded = None
    if config is not None or cfg.find(Path.cwd()) is not None:
        loaded = _load(config)
    report = run_doctor(loaded)
    if as_json:
        _echo_json(report)
    else:
        from ci.reports.console import print_doctor

        print_doctor(report, _console())
    return errors.EXIT_OK if report["ok"] else errors.EXIT_FAILED


@app.command("setup-qemu")
def setup_qemu(platform: PlatformOpt = None) -> int:
    """Register qemu-user-static binfmt handlers with flag F (idempotent; needs root)."""
    from ci.commands.setup_qemu import run_setup

    for line in run_setup(_platforms(platform)):
        sys.stdout.write(line + "\n")
    return errors.EXIT_OK


@app.command()
def train(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train a new run even when the "
                                          "input hash is unchanged")] = False,
) -> int:
    """Train the model (or reuse an unchanged run), gate it against the alias (default
    champion) with MLflow, and register it if it passed. Never moves the alias. Exit 1 if the
    gate failed."""
    from ci.commands.train import print_result, run_train

    loaded = _load(config)
    with _locked(loaded, "train"):
        result = run_train(loaded, retrain=retrain)
    if as_json:
        _echo_json({**result.model_dump(mode="json"), "ok": result.passed})
    else:
        print_result(result, _console())
    return errors.EXIT_OK if result.passed else errors.EXIT_FAILED


@app.command()
def build(
    config: ConfigOpt = None,
    platform: PlatformOpt = None,
    as_json: JsonOpt = False,
    no_publish: Annotated[bool, typer.Option(
        "--no-publish", help="Test and build only: push nothing, move no tag")] = False,
) -> int:
    """Test and build every platform on its runner (Docker engine), then publish the
    multi-arch index and move the release tags only if ALL platforms passed."""
    from ci.commands.build import publish_jobs, run_jobs
    from ci.reports import results as report

    loaded = _load(config)
    only = _platforms(platform)
    with _locked(loaded, "build"):
        prepared, results = run_jobs(
            loaded, only=only, push=not no_publish,
            on_result=None if as_json else lambda r: _console(stderr=True).print(
                f"{r.platform}: {r.status} on {r.runner} ({r.placement}, {r.seconds:.1f} s)"),
        )
        published = None
        if not no_publish:
            try:
                published = publish_jobs(loaded, prepared, results)
            except errors.CIError as exc:
                report.print_refusal(results, exc.message, _console(), as_json=as_json)
                raise
    if as_json:
        _echo_json(report.to_json(results, published))
    else:
        report.print_results(results, _console(), published)
    return errors.EXIT_OK if all(r.status == "passed" for r in results) else errors.EXIT_FAILED


@app.command()
def job(
    platform: Annotated[str, typer.Option("--platform", "-p", help="The one platform to run")],
    config: ConfigOpt = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Result file (default result-<os>-<arch>.json)")] = None,
    engine: Annotated[str, typer.Option("--engine", help="Engine: docker")] = "docker",
    run_id: Annotated[str | None, typer.Option(
        "--run-id", help="Run id shared by the legs (default: the CI run id or MACI_RUN_ID)")]
    = None,
    model_version: Annotated[str | None, typer.Option(
        "--model-version", help="Registered model version to embed (from `ci train --json`); "
        "required when the config has a [model]")] = None,
    as_json: JsonOpt = False,
) -> int:
    """Run ONE platform job (a CI matrix leg): test, build, push by digest (no tag), and
    write the result JSON for `ci merge`. Exit 1 if the job failed."""
    from ci.commands.job import run_job
    from ci.reports import results as report

    result, path = run_job(_load(config), platform, output=output, engine=engine,
                           run_id=run_id, model_version=model_version)
    if as_json:
        _echo_json(report.to_json([result]))
    else:
        report.print_results([result], _console())
        _console().print(f"result written to {path}")
    smoked = result.smoke is None or result.smoke.passed
    return errors.EXIT_OK if result.ok and smoked else errors.EXIT_FAILED


@app.command()
def merge(
    files: Annotated[list[Path], typer.Argument(help="Result files written by `ci job`")],
    config: ConfigOpt = None,
    platform: PlatformOpt = None,
    model_result: Annotated[Path | None, typer.Option(
        "--model-result", help="The JSON `ci train --json` printed: its gate decision becomes "
        "part of the verdict (a rejected model refuses the merge)")] = None,
    as_json: JsonOpt = False,
) -> int:
    """Decide the verdict from `ci job` results (the same gates as `ci run`), then assemble
    the multi-arch index and move the release tags; refuses (exit 1, nothing published) if a
    platform failed, is missing or mismatched, or the given model result was rejected."""
    from ci.commands.merge import loadable_results, run_merge
    from ci.reports import results as report

    try:
        loaded = _load(config)
        with _locked(loaded, "merge"):
            results, _verdict, published = run_merge(
                loaded, files,
                expected=[str(p) for p in _platforms(platform)] if platform else None,
                model_result=model_result,
            )
    except errors.CIError as exc:
        report.print_refusal(loadable_results(files), exc.message, _console(),
                             as_json=as_json)
        raise
    if as_json:
        _echo_json(report.to_json(results, published))
    else:
        report.print_results(results, _console(), published)
    return errors.EXIT_OK


@app.command()
def run(
    pipeline: Annotated[str, typer.Argument(
        help="The project's pipelines/NAME.py, else a built-in (release, image_only)")]
    = "release",
    config: ConfigOpt = None,
    platform: PlatformOpt = None,
    engine: EngineOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run every gate, then print the "
                                          "index digest and deploy diff; publish, deploy and "
                                          "promote nothing")] = False,
    force: Annotated[bool, typer.Option("--force", help="Run every stage (and retrain the "
                                        "model) even when the last release came from the "
                                        "same inputs")] = False,
    as_json: JsonOpt = False,
) -> int:
    """Run the whole release: plan, train + gate, platform jobs, smoke, verdict, publish,
    deploy, promote, notify. Nothing moves unless every gate passed."""
    from ci.commands.run import run_pipeline, show_run

    chosen = _OVERRIDE.get() or pipeline
    loaded = _load(config)
    with _locked(loaded, "run"):
        code, result, error = run_pipeline(
            loaded, chosen, engine=_engine(engine), only=_platforms(platform),
            dry_run=dry_run, force=force,
        )
    show_run(result, _console(), as_json=as_json, dry_run=dry_run)
    if error is not None:
        raise error
    return code


@app.command()
def deploy(
    index: Annotated[str, typer.Option("--index", help="Index reference repo[:tag]@sha256:... "
                                       "or just the digest sha256:...")],
    model_version: Annotated[str | None, typer.Option("--model-version")] = None,
    config: ConfigOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the diff, push nothing")]
    = False,
    as_json: JsonOpt = False,
) -> int:
    """Pin the deploy manifests to the index digest (and model version), commit, push."""
    from ci.commands.deploy import run_deploy, show_deploy

    loaded = _load(config)
    with _locked(loaded, "deploy"):
        ref, result = run_deploy(loaded, index, model_version, dry_run=dry_run)
    show_deploy(ref, result, as_json=as_json, dry_run=dry_run)
    return errors.EXIT_OK


@app.command()
def promote(
    model_version: Annotated[str, typer.Option("--model-version", help="Registered version")],
    deploy_commit: Annotated[str, typer.Option("--deploy-commit",
                                               help="The deploy commit that landed")] = "",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Move the MLflow alias (e.g. champion) to a version that passed the gate; run it only
    after the deploy commit landed."""
    from ci.commands.promote import run_promote, show_promote

    loaded = _load(config)
    with _locked(loaded, "promote"):
        result = run_promote(loaded, model_version, deploy_commit)
    show_promote(result, as_json=as_json)
    return errors.EXIT_OK


@app.command()
def smoke(
    url: Annotated[str, typer.Option("--url", help="Base URL of the running service")],
    reference: Annotated[str, typer.Option("--reference", help="What runs there "
                                           "(repo@sha256:...), for the record")] = "",
    config: ConfigOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result JSON")]
    = None,
    as_json: JsonOpt = False,
) -> int:
    """Smoke/stress-test a service that already runs (a canary) with the [smoke] requests,
    concurrency and p95 bound of a release. Exit 1 if it is not healthy or misses a bound."""
    from ci.commands.smoke import run_url_smoke, summary

    result = run_url_smoke(_load(config), url, reference=reference, output=output)
    if as_json:
        _echo_json(result.model_dump(mode="json"))
    sys.stderr.write(summary(result) + "\n")
    return errors.EXIT_OK if result.passed else errors.EXIT_FAILED


export_app = typer.Typer(name="export", no_args_is_help=True, help="Write the release for others to run.")
app.add_typer(export_app)


@export_app.command("argo")
def export_argo(
    config: ConfigOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for one file per "
                                        "object, or - for one YAML stream on stdout")] = "-",
    ci_image: Annotated[str | None, typer.Option("--ci-image", help="Image the steps run in "
                                                 "(default [argo] ci_image)")] = None,
) -> int:
    """Write the release as an Argo WorkflowTemplate (one `ci job` pod per platform, on a node of
    its arch) plus the EventSource and Sensor that start it on a push; same config, same bytes."""
    from ci.commands.export import run_export

    for line in run_export(config, output, ci_image=ci_image):
        sys.stdout.write(line + "\n")
    return errors.EXIT_OK


@app.command()
def version() -> int:
    """Print the version."""
    from ci.core.version import __version__

    sys.stdout.write(f"multiarch-ci {__version__}\n")
    return errors.EXIT_OK


@app.command()
def init(
    directory: Annotated[Path, typer.Option(
        "--dir", help="The repository to set up (default: the current directory)")] = Path("."),
    image: Annotated[str | None, typer.Option(
        "--image", help="Image repository, no tag (default: from the git remote origin)")] = None,
    platform: Annotated[list[str] | None, typer.Option(
        "--platform", "-p", help="Platform(s) to release (repeat or comma-separate; default "
        "linux/amd64, linux/arm64)")] = None,
    dockerfile: Annotated[str | None, typer.Option(
        "--dockerfile", help="Dockerfile path inside --dir (default: Dockerfile, Containerfile)")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing ci.toml")] = False,
    to_stdout: Annotated[bool, typer.Option(
        "--stdout", help="Print the config instead of writing it (the report goes to stderr)")]
    = False,
    as_json: JsonOpt = False,
) -> int:
    """Write a commented ci.toml from what the repository has (Dockerfile stages, git remote,
    training script, manifests) and print the next steps; exit 2 if a config exists."""
    from ci.commands.init import run_init

    result = run_init(directory, image=image, platforms=platform, dockerfile=dockerfile,
                      force=force, write=not to_stdout)
    if as_json:
        _echo_json(result.to_json())
        return errors.EXIT_OK
    if to_stdout:
        sys.stdout.write(result.text)
    (sys.stderr if to_stdout else sys.stdout).write("\n".join(result.lines()) + "\n")
    return errors.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point: the single place that turns errors into exit codes."""
    from ci.adapters import signals

    signals.install()  # SIGTERM (runner shutdown) cleans up like Ctrl-C; exit 143
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="ci", standalone_mode=False)
    except errors.Interrupted as exc:
        sys.stderr.write(redact(f"interrupted by {signals.name()}: {exc.message}") + "\n")
        return signals.exit_code()
    except errors.CIError as exc:
        for line in exc.lines():
            sys.stderr.write(redact(f"error: {line}" if not line.startswith("config error")
                                    else line) + "\n")
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write(f"interrupted by {signals.name()}: {_interrupted_state()}\n")
        return signals.exit_code()
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except typer.TyperException as exc:  # typer's (vendored click) usage errors
        fmt = getattr(exc, "format_message", None)
        sys.stderr.write(f"error: {fmt() if fmt else exc}\n")
        return errors.EXIT_USAGE
    except Exception:  # a bug: keep the traceback, but mask secrets in it
        sys.stderr.write(redact(traceback.format_exc()))
        sys.stderr.write("internal error (exit 3): please report this with the traceback\n")
        return errors.EXIT_INTERNAL
    code = int(rc) if isinstance(rc, int) else errors.EXIT_OK
    if code == errors.EXIT_INTERRUPTED:  # typer turns Ctrl-C into a plain 130
        sys.stderr.write(f"interrupted by {signals.name()}: {_interrupted_state()}\n")
        return signals.exit_code()
    return code


def _interrupted_state() -> str:
    """The true state after an interrupt outside a release's publish (which says its own)."""
    from ci.stages import journal

    return journal.interrupted_state()


def run_main(pipeline: Any, argv: list[str] | None = None) -> int:
    """`python -m pipelines.NAME [ci run options]` for a project's own pipeline file: the
    same options, reports and exit codes as `ci run NAME`, with this function as the
    pipeline (so `dagger run python -m pipelines.NAME` works too)."""
    from ci.pipelines.loader import LoadedPipeline

    module = sys.modules.get(str(getattr(pipeline, "__module__", "")))
    spec = getattr(module, "__spec__", None)  # under `python -m pipelines.X`: pipelines.X
    qualified = getattr(spec, "name", None) or getattr(pipeline, "__module__", "") or "pipeline"
    name = str(qualified).rsplit(".", 1)[-1]
    origin = str(getattr(module, "__file__", "") or qualified)
    token = _OVERRIDE.set(LoadedPipeline(name, pipeline, origin))
    try:
        return main(["run", "release", *(sys.argv[1:] if argv is None else argv)])
    finally:
        _OVERRIDE.reset(token)


def entry() -> None:
    """Console-script entry: exit without interpreter teardown once output is flushed.

    Tearing down a process that imported MLflow takes ~0.7 s (measured in BENCHMARKS.md);
    every file, report and record is written before `main()` returns, so skip it.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
