"""`ci plan`: discover runners and place every platform job (the only I/O is discovery)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ci.core.config import Config
from ci.core.plan import Plan
from ci.core.platforms import Platform
from ci.stages.prepare import build_plan


def run_plan(config: Config, *, only: list[Platform] | None = None, engine: str | None = None,
             environ: Mapping[str, str] | None = None) -> Plan:
    return build_plan(config, only=only, engine=engine,
                      environ=dict(os.environ if environ is None else environ))
