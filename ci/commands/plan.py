"""`ci plan`: discover runners and place every platform job; pure apart from discovery."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ci import inventory
from ci.config import Config
from ci.plan import Plan, make_plan, runners_for
from ci.platforms import Platform


def build_plan(
    config: Config,
    *,
    only: list[Platform] | None = None,
    engine: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Plan:
    env = dict(os.environ if environ is None else environ)
    runners = runners_for(config, engine, env.get("DOCKER_HOST", ""))
    return make_plan(config, inventory.discover(runners, env), only=only)
