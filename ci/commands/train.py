"""`ci train`: train (or reuse), gate vs the alias, register; print the gate decision.

The alias is never moved here: promotion belongs to the release, after the deploy commit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ci.adapters import ci_env
from ci.adapters.state_dir import check_state_dir
from ci.core.config import Config
from ci.core.model import ModelStageResult
from ci.core.ports import TrackingPort
from ci.stages.prepare import new_run_id
from ci.stages.real import MlflowTracking


def run_train(config: Config, environ: Mapping[str, str] | None = None,
              tracking: TrackingPort | None = None, *, retrain: bool = False
              ) -> ModelStageResult:
    """The model stage alone, with lineage from the CI system or the local git checkout;
    `retrain` trains a new run even when the input hash is unchanged."""
    check_state_dir(config.state_path)
    env = dict(os.environ if environ is None else environ)
    source = ci_env.detect(env, config.root_path)
    port = tracking or MlflowTracking()
    return port.train_and_gate(config, source, new_run_id(source), environ=env,
                               retrain="--retrain" if retrain else "")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_result(result: ModelStageResult, console: Any) -> None:
    """The gate decision as a table, then what happened to the run and the registry."""
    from rich.table import Table

    t = result.training
    d = result.decision
    console.print(t.message)
    against = (f"{result.alias} = version {d.champion_version}" if d.compared_with_champion
               else "absolute thresholds")
    table = Table(title=f"gate: run {t.run_id[:12]} vs {against}", title_justify="left")
    for col in ("metric", "candidate", result.alias, "delta", "bounds", "result"):
        table.add_column(col)
    for c in d.checks:
        mark = "[green]pass[/]" if c.passed else "[red]FAIL[/]"
        table.add_row(c.metric, _fmt(c.candidate), _fmt(c.baseline),
                      "-" if c.delta is None else f"{c.delta:+.4f}", c.bounds, mark)
    checked = {c.metric for c in d.checks}
    for name in sorted(set(d.metrics) - checked):
        table.add_row(name, _fmt(d.metrics[name]), _fmt(d.baseline.get(name)),
                      "-" if name not in d.deltas else f"{d.deltas[name]:+.4f}", "-", "info")
    console.print(table)
    for note in d.notes:
        console.print(f"note: {note}")
    for reason in d.reasons:
        console.print(f"[red]reason[/]: {reason}")
    if result.version:
        verb = "registered" if result.new_version else "already registered as"
        console.print(f"[green]gate passed[/]: {verb} {result.model_uri} "
                      f"(alias {result.alias!r} not moved; the release promotes after deploy)")
    else:
        console.print(f"[red]gate failed[/]: nothing registered, alias {result.alias!r} untouched")
    console.print(f"time: {result.seconds.get('total', 0):.1f} s total, "
                  f"{result.seconds.get('overhead', 0):.1f} s beyond the training script"
                  f" — tracking {result.tracking_uri}")
