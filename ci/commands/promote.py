"""`ci promote --model-version V`: move the MLflow alias, after the deploy commit landed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

from ci.core.config import Config
from ci.core.model import PromoteResult
from ci.core.redact import redact
from ci.stages import model as model_stage


def run_promote(config: Config, version: str, deploy_commit: str,
                environ: Mapping[str, str] | None = None) -> PromoteResult:
    return model_stage.promote(config, version, deploy_commit,
                               environ=dict(os.environ if environ is None else environ))


def show_promote(result: PromoteResult, *, as_json: bool) -> None:
    """The promotion as JSON, or `model: alias → version N (was M)`."""
    if as_json:
        sys.stdout.write(redact(json.dumps(result.model_dump(mode="json"), indent=2,
                                           default=str)) + "\n")
    else:
        sys.stdout.write(f"{result.registered_model}: {result.alias} → version {result.version}"
                         f" (was {result.previous_version or 'unset'})\n")
