"""The `ci` command: parse, load config, call the library, map errors to exit codes.

No pipeline logic lives here. Heavy libraries (mlflow, dagger, python-on-whales) are
imported inside the commands that need them so `ci --help` and `ci plan` stay fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from ci import errors
from ci.redact import redact

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
    from ci import config as cfg

    return cfg.load(config, os.environ, Path.cwd())


def _platforms(values: list[str] | None) -> Any:
    from ci import platforms

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
) -> int:
    """Show where each platform job would run (native, emulated or unavailable). Exit 1 if any
    platform is unavailable."""
    from ci.commands.plan import build_plan

    only = _platforms(platform)
    result = build_plan(_load(config), only=only, engine=_engine(engine))
    if as_json:
        _echo_json({**result.model_dump(mode="json"), "ok": result.ok})
    else:
        from ci.reports.console import print_plan

        print_plan(result, _console())
    return errors.EXIT_OK if result.ok else errors.EXIT_FAILED


@app.command()
def doctor(config: ConfigOpt = None, as_json: JsonOpt = False) -> int:
    """Report Docker daemons and their architecture, buildx, qemu binfmt handlers (flag F),
    Dagger CLI/session, and whether the configured registry and MLflow answer."""
    from ci import config as cfg
    from ci.commands.doctor import run_doctor

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
    from ci import binfmt, platforms

    wanted = _platforms(platform) or [platforms.parse("linux/arm64")]
    for r in binfmt.setup(wanted):
        sys.stdout.write(f"{r.platform}: {r.action} ({r.interpreter}, flags OCF)\n")
    return errors.EXIT_OK


@app.command()
def version() -> int:
    """Print the version."""
    from ci import __version__

    sys.stdout.write(f"multiarch-ci {__version__}\n")
    return errors.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point: the single place that turns errors into exit codes."""
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="ci", standalone_mode=False)
    except errors.CIError as exc:
        for line in exc.lines():
            sys.stderr.write(redact(f"error: {line}" if not line.startswith("config error")
                                    else line) + "\n")
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        return errors.EXIT_INTERRUPTED
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
    return int(rc) if isinstance(rc, int) else errors.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
