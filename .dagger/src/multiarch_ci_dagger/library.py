"""The module's one seam into multiarch-ci: the CLI's own library calls, on an exported folder.

Why a separate, synchronous file: the library's commands are blocking and start their own
event loops (`anyio.run`), so the Dagger functions run these in a worker thread; and nothing
here imports dagger, so what `dagger call` returns is the same JSON `ci plan --json`,
`ci job` and `ci run --json` print, made by the same functions (no stage is re-implemented).

Engine: always "dagger". A module function runs inside the engine, in a runtime container
whose environment holds the session the engine opened for it (DAGGER_SESSION_PORT/TOKEN,
what `dagger run` hands its child too); the library's Dagger children inherit that
environment and so reuse the current session. A `[[runners]]` entry with its own `host`
needs a dagger CLI to open a session there, which the runtime container does not have:
such a runner is reported unreachable and its platforms fall back as the config says.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINE = "dagger"


@dataclass(frozen=True)
class Answer:
    """What a function returns (`text`), and why it must fail instead (`refused`, or '')."""

    text: str
    refused: str = ""


def environ(entries: Sequence[str] | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The runtime's environment plus the caller's `NAME=VALUE` entries.

    A module sees nothing of the caller's shell, so CI variables (GITHUB_*, CI_*,
    MLFLOW_TRACKING_URI, MACI_RUN_ID...) reach the library only when passed with `--env`.
    """
    from ci.core.errors import UsageError

    env = dict(os.environ if base is None else base)
    for entry in entries or ():
        name, sep, value = entry.partition("=")
        if not sep or not name.strip() or name != name.strip():
            raise UsageError(f"--env {entry!r}: expected NAME=VALUE")
        env[name] = value
    return env


def _json(data: Any) -> str:
    """The CLI's JSON form (`ci ... --json`): indented, secrets masked."""
    from ci.core.redact import redact

    return redact(json.dumps(data, indent=2, default=str)) + "\n"


def _config(root: Path, config: str, env: Mapping[str, str]) -> Any:
    """`-c` relative to the project root; without one, the CLI's search (ci.toml, then
    pyproject.toml's [tool.ci]) from the root."""
    from ci.core.config import load

    return load(root / config if config else None, env, root)


def _only(values: Sequence[str] | None) -> Any:
    from ci.core import platforms

    return platforms.parse_many(list(values)) if values else None


def password_variable(root: Path, config: str, env: Mapping[str, str]) -> str:
    """The variable `publish.auth.password_env` names: where a `--registry-password` secret
    goes, so the library reads it exactly as it reads it from a CI job's environment."""
    from ci.core.errors import UsageError

    name = _config(root, config, env).publish.auth.password_env
    if not name:
        raise UsageError("--registry-password: the config sets no publish.auth.password_env "
                         "(e.g. auth = { username = \"ci\", password_env = \"REGISTRY_PASSWORD\" })")
    return str(name)


def plan(root: Path, *, config: str = "", platform: Sequence[str] | None = None,
         matrix: bool = False, env: Mapping[str, str]) -> Answer:
    """`ci plan --engine dagger --json`: refused when a platform cannot be placed."""
    from ci.commands.plan import plan_json, plan_ok, run_plan

    result = run_plan(_config(root, config, env), only=_only(platform), engine=ENGINE,
                      environ=env, matrix=matrix)
    data = plan_json(result)
    text = _json(data)
    refusal = (data.get("emulation") or {}).get("refusal") or ""
    why = "; ".join([*result.problems(), *([refusal] if refusal else [])])
    return Answer(text, "" if plan_ok(result) else "plan: " + why)


def job(root: Path, platform: str, *, config: str = "", model_version: str = "",
        run_id: str = "", env: Mapping[str, str]) -> Answer:
    """`ci job --platform P` on the current Dagger engine: test, build, push by digest (no
    tag); the text is the result file `ci merge` reads. Refused when the job failed."""
    from ci.adapters.engines.dagger_routing import DaggerChildEngine, Options
    from ci.commands.job import run_job
    from ci.core import platforms
    from ci.pipelines.ports import Ports

    loaded = _config(root, config, env)
    options = Options(auth=loaded.publish.auth, insecure=loaded.publish.insecure)

    def engines(_before_release: object) -> Any:
        # `ci job` picks Docker engines by default; here every job goes to a Dagger child on
        # its placed engine (the current session for the default one), as `ci run` does.
        return lambda _spec: DaggerChildEngine([], env, options)

    output = root / ".maci" / "module" / f"result-{platforms.parse(platform).slug}.json"
    result, path = run_job(loaded, platform, output=output, engine=ENGINE, environ=env,
                           run_id=run_id or None, model_version=model_version or None,
                           ports=Ports(engines=engines))
    text = path.read_text()
    if result.ok:
        return Answer(text)
    why = result.failure.message if result.failure else result.status
    return Answer(text, f"{result.platform}: {why}")


def release(root: Path, *, pipeline: str = "release", config: str = "",
            platform: Sequence[str] | None = None, dry_run: bool = False, force: bool = False,
            env: Mapping[str, str]) -> Answer:
    """`ci run PIPELINE --engine dagger --json`: the project's own pipelines/PIPELINE.py or
    a built-in; refused (nothing moved) when the run's exit code is not 0."""
    from ci.commands.run import run_pipeline

    code, run, error = run_pipeline(_config(root, config, env), pipeline, engine=ENGINE,
                                    only=_only(platform), dry_run=dry_run, force=force,
                                    environ=env, live=False)
    text = _json(run.outcome())
    if code == 0 and error is None:
        return Answer(text)
    if error is not None:
        return Answer(text, f"{pipeline}: {error.message}")
    reasons = run.verdict.reasons if run.verdict is not None else []
    return Answer(text, f"{pipeline}: exit {code}" + (": " + "; ".join(reasons) if reasons else ""))
