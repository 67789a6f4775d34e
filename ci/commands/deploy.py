"""`ci deploy --index REF`: pin the deploy manifests to an index digest, commit, push.

The manual step of matrix mode (after `ci merge`); `ci run` deploys through its release
handle instead, after its verdict passed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

from ci.adapters import ci_env
from ci.adapters.state_dir import check_state_dir
from ci.core.config import Config
from ci.core.errors import UsageError
from ci.core.outcome import DeployResult, ReleaseOutcome
from ci.core.redact import redact
from ci.stages import deploy as gitops


def index_ref(config: Config, index: str) -> str:
    """`repo[:tag]@sha256:...` or a bare digest (then the config's image) → a digest ref."""
    ref = index if "@" in index else f"{config.project.image}@{index}"
    if not ref.split("@", 1)[1].startswith("sha256:"):
        raise UsageError(f"--index: {index!r} is not a digest reference")
    return ref


def run_deploy(config: Config, index: str, model_version: str | None, *, dry_run: bool,
               environ: Mapping[str, str] | None = None) -> tuple[str, DeployResult]:
    check_state_dir(config.state_path)
    env = dict(os.environ if environ is None else environ)
    ref = index_ref(config, index)
    gitops.init_remote(config)
    source = ci_env.detect(env, config.root_path)
    result = gitops.deploy(config, source, ref, model_version, dry_run=dry_run,
                           source_repo=config.root_path, environ=env)
    return ref, result


def show_deploy(ref: str, result: DeployResult, *, as_json: bool, dry_run: bool) -> None:
    """The deploy's JSON (as in `ci run --json`), the dry run's diff, or one line."""
    if as_json:
        data = ReleaseOutcome(deployed=result).to_json()["deploy"]
        sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")
    elif dry_run:
        sys.stdout.write(redact(result.diff))
    else:
        sys.stdout.write(f"deployed {ref} to {result.branch}: {result.commit} "
                         f"({result.attempts} push(es))\n")
