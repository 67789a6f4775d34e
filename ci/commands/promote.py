"""`ci promote --model-version V`: move the MLflow alias, after the deploy commit landed."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ci.core.config import Config
from ci.core.model import PromoteResult
from ci.stages import model as model_stage


def run_promote(config: Config, version: str, deploy_commit: str,
                environ: Mapping[str, str] | None = None) -> PromoteResult:
    return model_stage.promote(config, version, deploy_commit,
                               environ=dict(os.environ if environ is None else environ))
