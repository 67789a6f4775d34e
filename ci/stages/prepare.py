"""Prepare: discover runners, place every platform job, and make one JobSpec per job.

The first stage of every pipeline and of `ci job`; it fails (PlanUnavailable) before any
work starts when a platform cannot be placed, its base image is missing on its runner, or
the predicted emulated seconds (stages/history) exceed `[emulation] budget_seconds`.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ci.adapters import bases, ci_env, inventory
from ci.core.config import Config
from ci.core.errors import PlanUnavailable, UsageError
from ci.core.jobs import spec_for, with_model
from ci.core.plan import Plan, make_plan, runners_for
from ci.core.platforms import Platform
from ci.core.prediction import budget_problem
from ci.core.results import JobSpec, SourceInfo
from ci.stages import history

RUN_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now_rfc3339(clock: Clock = utc_now) -> str:
    return rfc3339(clock())


def new_run_id(source: SourceInfo, clock: Clock = utc_now) -> str:
    """The CI system's run id, else a fresh local one (`MACI_RUN_ID` overrides both)."""
    if source.run_id:
        return source.run_id
    return f"local-{clock():%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Prepared:
    """The placed plan, the source it releases and one spec per platform job."""

    plan: Plan
    source: SourceInfo
    run_id: str
    specs: list[JobSpec]
    output_dir: Path

    @property
    def expected(self) -> list[str]:
        """The platforms this release must hold (every planned job)."""
        return [j.platform for j in self.plan.jobs]

    def with_model(self, build_args: Mapping[str, str]) -> Prepared:
        """The same jobs, their release builds embedding the registered model."""
        return replace(self, specs=with_model(self.specs, build_args))


def build_plan(
    config: Config,
    *,
    only: list[Platform] | None = None,
    engine: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Discover the runners, place every platform job (pure), then look each job's base
    image up on its runner: the only I/O of a plan."""
    env = dict(os.environ if environ is None else environ)
    runners = runners_for(config, engine, env.get("DOCKER_HOST", ""))
    return bases.check(config, make_plan(config, inventory.discover(runners, env), only=only),
                       env)


def prepare(
    config: Config,
    *,
    only: list[Platform] | None = None,
    engine: str = "docker",
    environ: Mapping[str, str] | None = None,
    run_id: str | None = None,
    clock: Clock = utc_now,
    plan: Plan | None = None,
) -> Prepared:
    """Plan (fails before any work if a platform cannot be placed, its base image is missing
    on its runner, or the job history predicts more emulated seconds than the budget) and
    one spec per job."""
    env = dict(os.environ if environ is None else environ)
    if plan is None:
        plan = build_plan(config, only=only, engine=engine, environ=env)
    if not plan.ok:
        problems = plan.problems()
        raise PlanUnavailable("; ".join(problems), problems)
    plan = history.predicted(config, plan)
    over = budget_problem(plan)  # the emulation budget, checked on the prediction up front
    if over:
        raise PlanUnavailable(over)
    source = ci_env.detect(env, config.root_path)
    rid = run_id or new_run_id(source, clock)
    if not RUN_ID_RE.fullmatch(rid) or rid in (".", ".."):
        raise UsageError(f"run id {rid!r} (--run-id / MACI_RUN_ID): use letters, digits, '.', "
                         "'_' and '-' only (it names a folder under the state dir)")
    out = config.state_path / "runs" / rid
    specs = [spec_for(config, job, source, rid, out) for job in plan.jobs]
    return Prepared(plan, source, rid, specs, out)
