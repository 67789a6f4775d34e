"""`ci plan`: discover runners and place every platform job (the only I/O is discovery)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ci.core.config import Config
from ci.core.plan import Plan
from ci.core.platforms import Platform
from ci.stages.matrix import check_matrix
from ci.stages.prepare import build_plan


def run_plan(config: Config, *, only: list[Platform] | None = None, engine: str | None = None,
             environ: Mapping[str, str] | None = None, matrix: bool = False) -> Plan:
    """`matrix`: the plan of a multi-job pipeline, refused (exit 2) before any discovery when a
    store it needs would live in one job's folder (see stages/matrix)."""
    if matrix:
        check_matrix(config)
    return build_plan(config, only=only, engine=engine,
                      environ=dict(os.environ if environ is None else environ))
