"""`ci plan`: discover runners, place every platform job and predict its time from the job
history (the only I/O: discovery and reading `<state_dir>/history.json`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ci.core.config import Config
from ci.core.plan import Plan
from ci.core.platforms import Platform
from ci.core.prediction import budget_problem, emulation_summary, prediction_lines
from ci.stages.history import predicted
from ci.stages.matrix import check_matrix
from ci.stages.prepare import build_plan


def run_plan(config: Config, *, only: list[Platform] | None = None, engine: str | None = None,
             environ: Mapping[str, str] | None = None, matrix: bool = False) -> Plan:
    """`matrix`: the plan of a multi-job pipeline, refused (exit 2) before any discovery when a
    store it needs would live in one job's folder (see stages/matrix)."""
    if matrix:
        check_matrix(config)
    return predicted(config, build_plan(config, only=only, engine=engine,
                                        environ=dict(os.environ if environ is None else environ)))


def plan_ok(plan: Plan) -> bool:
    """What `prepare` would accept: every job placed with its base, and within the budget."""
    return plan.ok and budget_problem(plan) is None


def plan_json(plan: Plan) -> dict[str, Any]:
    """`ci plan --json`: the plan (jobs carry `predicted_seconds`, `prediction_basis`), the
    predicted emulated seconds against the budget, and `ok`."""
    return {**plan.model_dump(mode="json"), "emulation": emulation_summary(plan),
            "ok": plan_ok(plan)}


def print_predicted_plan(plan: Plan, console: Any) -> None:
    """The plan table, then one prediction line per job and the budget refusal, if any."""
    from rich.markup import escape

    from ci.reports.console import print_plan

    print_plan(plan, console)
    lines = prediction_lines(plan)
    if lines:
        console.print("predicted (from earlier runs' step times):")
    for line in lines:
        console.print(f"  {escape(line)}")
    over = budget_problem(plan)
    if over:
        console.print(f"[red]over budget[/]: {escape(over)}")
