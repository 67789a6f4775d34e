"""`ci job --platform P`: one platform job (a CI matrix leg) → a PlatformResult JSON file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ci.adapters.state_dir import check_state_dir
from ci.core import platforms
from ci.core.config import Config
from ci.core.errors import UsageError
from ci.core.results import PlatformResult
from ci.pipelines.ports import Ports
from ci.stages.fanout import execute
from ci.stages.prepare import prepare


def default_output(platform: str) -> Path:
    return Path(f"result-{platforms.parse(platform).slug}.json")


def run_job(
    config: Config,
    platform: str,
    *,
    output: Path | None = None,
    engine: str = "docker",
    environ: Mapping[str, str] | None = None,
    run_id: str | None = None,
    model_version: str | None = None,
    ports: Ports | None = None,
) -> tuple[PlatformResult, Path]:
    """Plan just this platform, run its job (push by digest, no tag) and write the result."""
    check_state_dir(config.state_path)
    env = dict(os.environ if environ is None else environ)
    wanted = platforms.parse(platform)
    if str(wanted) not in config.project.platforms:
        raise UsageError(f"--platform {platform}: not one of the project's platforms "
                         f"({', '.join(config.project.platforms)})")
    if config.model is not None and not model_version:
        raise UsageError("--model-version is required: the config has a [model] and the image "
                         "embeds the registered version (run `ci train --json` first)")
    ports = ports or Ports()
    plan = ports.plan(config, only=[wanted], engine=engine, environ=env)
    prepared = prepare(config, only=[wanted], engine=engine, environ=env, run_id=run_id,
                       plan=plan)
    if model_version:
        model = ports.tracking.materialize(config, model_version, environ=env)
        prepared = prepared.with_model(model.build_args())
    factory = ports.engines(None) if ports.engines else None
    [result] = execute(prepared, config, engine=engine, push=True, environ=env, factory=factory)
    if config.smoke is not None and result.ok and result.reference and engine == "docker":
        # the same smoke gate as `ci run`, on this leg's runner, by the digest `ci merge` will
        # publish; a leg without it (other engines) is refused by the merge, never waved through
        [spec] = prepared.specs
        smoke = ports.smoke(platform=result.platform, placement=result.placement,
                            reference=result.reference, config=config.smoke,
                            host=spec.placement.host, environ=env)
        result = result.model_copy(update={"smoke": smoke})
    path = output or default_output(str(wanted))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json(indent=2) + "\n")
    return result, path
