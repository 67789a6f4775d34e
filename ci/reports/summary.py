"""Console progress per platform job and stage, and the final release summary (rich).

`Progress` is what the orchestrator calls as stages start and finish: on a terminal it draws
a live table, elsewhere (CI logs, pipes) it prints one timestamped line per event. Either
way it records the spans the GitHub gantt and the GitLab metrics are built from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import NamedTuple

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ci.core.critical_path import SpanData, critical_path
from ci.core.outcome import ReleaseOutcome
from ci.core.redact import redact
from ci.core.verdict import Verdict

_STYLE = {"native": "green", "emulated": "yellow", "unavailable": "red"}


class Span(NamedTuple):
    """One stage of one lane, in wall-clock seconds (what the gantt draws)."""

    stage: str
    lane: str
    start: float
    end: float
    ok: bool = True


@dataclass
class _Lane:
    placement: str = ""
    stage: str = ""
    state: str = "waiting"
    started: float = 0.0
    detail: str = ""
    done: list[str] = field(default_factory=list)


class Progress:
    """Live progress of a run: `stage_started` / `stage_finished` per lane (platform, model...)."""

    def __init__(self, console: Console | None = None, *, live: bool | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.console = console or Console(stderr=True)
        self.live_mode = (self.console.is_terminal and not self.console.is_dumb_terminal
                          if live is None else live)
        self._clock = clock
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._open: dict[tuple[str, str], float] = {}
        self._spans: list[Span] = []
        self._live: Live | None = None

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> Progress:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self.live_mode and self._live is None:
            self._live = Live(console=self.console, get_renderable=self.table,
                              refresh_per_second=4, transient=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    # ------------------------------------------------------------ events
    def lane(self, lane: str, placement: str = "") -> None:
        """Declare a lane up front (shows as waiting) with its placement, if it has one."""
        with self._lock:
            entry = self._lanes.setdefault(lane, _Lane())
            entry.placement = placement or entry.placement

    def stage_started(self, lane: str, stage: str, detail: str = "", placement: str = "") -> None:
        now = self._clock()
        with self._lock:
            entry = self._lanes.setdefault(lane, _Lane())
            entry.placement = placement or entry.placement
            entry.stage, entry.state, entry.started, entry.detail = stage, "running", now, detail
            self._open[(lane, stage)] = now
        self._line(now, lane, stage, "started", detail)

    def stage_finished(self, lane: str, stage: str, ok: bool, detail: str = "") -> None:
        now = self._clock()
        with self._lock:
            start = self._open.pop((lane, stage), now)
            self._spans.append(Span(stage, lane, start, now, ok))
            entry = self._lanes.setdefault(lane, _Lane())
            entry.stage, entry.state, entry.detail = stage, "ok" if ok else "failed", detail
            entry.started = start
            entry.done.append(f"{stage} {now - start:.1f}s{'' if ok else ' ✗'}")
        self._line(now, lane, stage, f"{'ok' if ok else 'FAILED'} {now - start:.1f} s", detail)

    @property
    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    # ------------------------------------------------------------ rendering
    def _line(self, when: float, lane: str, stage: str, what: str, detail: str) -> None:
        if self._live is not None:
            return
        placement = self._lanes[lane].placement if lane in self._lanes else ""
        stamp = datetime.fromtimestamp(when).strftime("%H:%M:%S")
        text = f"{stamp} {lane:<14} {stage:<10} {what}"
        if placement:
            text += f" ({placement})"
        if detail:
            text += f": {detail}"
        self.console.print(Text(redact(text)), highlight=False, soft_wrap=True)

    def table(self) -> Table:
        """The live view: one row per lane with its current stage and finished stages."""
        now = self._clock()
        table = Table(title="multiarch-ci", title_justify="left", expand=False)
        for col in ("lane", "placement", "stage", "state", "time", "done", "detail"):
            table.add_column(col)
        with self._lock:
            lanes = list(self._lanes.items())
        for name, e in lanes:
            elapsed = f"{now - e.started:.1f}s" if e.state == "running" else ""
            state = {"running": "[cyan]running[/]", "ok": "[green]ok[/]",
                     "failed": "[red]failed[/]"}.get(e.state, "[dim]waiting[/]")
            place = f"[{_STYLE.get(e.placement, 'white')}]{e.placement}[/]" if e.placement else ""
            table.add_row(_e(name), place, _e(e.stage), state, elapsed, _e(", ".join(e.done)),
                          _e(e.detail[:60]))
        return table


# ---------------------------------------------------------------- final summary


def _e(text: str) -> str:
    """User and tool text: secrets masked, rich markup characters escaped."""
    return escape(redact(text))


def summary_renderable(verdict: Verdict, outcome: ReleaseOutcome | None = None,
                       spans: Sequence[SpanData] = ()) -> RenderableType:
    """What a user reads at the end: outcome, digest, platforms, gate, deploy, model version,
    and (given the run's spans) the critical path: what to speed up to make it faster."""
    o = outcome or ReleaseOutcome()
    index_digest = o.published.digest if o.published else None
    tags: Sequence[str] = o.published.tags if o.published else ()
    deploy_commit = o.deployed.commit if o.deployed else None
    promoted_version = o.promoted.version if o.promoted else None
    notifications = o.notified
    if verdict.passed and index_digest:
        head = "[bold green]RELEASED[/]"
    elif verdict.passed:
        head = "[bold green]ALL GATES PASSED[/] (not published)"
    else:
        head = "[bold red]REJECTED[/] (nothing published)"
    lines: list[RenderableType] = [f"{head} {_e(verdict.image)}  run {_e(verdict.run_id)}"]
    src = verdict.source
    if src.sha or src.run_url:
        lines.append(_e(f"source: {src.sha[:12] or '-'} {src.ref or src.branch} {src.run_url}".rstrip()))
    lines.append(_e(f"index digest: {index_digest or '-'}"))
    if tags:
        lines.append(_e("tags: " + ", ".join(tags)))
    smoke = {s.platform: s for s in verdict.smoke}
    table = Table(title_justify="left")
    for col in ("platform", "placement", "status", "seconds", "tests", "smoke p95"):
        table.add_column(col)
    results = {r.platform: r for r in verdict.platforms}
    for p in verdict.expected_platforms:
        r = results.get(p)
        s = smoke.get(p)
        smoke_cell = "-" if s is None else (
            f"[{'green' if s.passed else 'red'}]{s.p95_ms:.1f} ms[/] / {s.bound_ms:g}")
        if r is None:
            table.add_row(_e(p), "-", "[red]no result[/]", "-", "-", smoke_cell)
            continue
        tests = f"{r.tests.passed}/{r.tests.total}" if r.tests else "-"
        status = "[green]passed[/]" if r.ok else f"[red]{r.status}[/]"
        table.add_row(_e(p), f"[{_STYLE[r.placement]}]{r.placement}[/]", status, f"{r.seconds:.1f}",
                      tests, smoke_cell)
    lines.append(table)
    for p in verdict.expected_platforms:
        r = results.get(p)
        if r is not None and r.failure is not None and r.failure.step != "model":
            lines.append(f"[red]{_e(p)} failed in {_e(r.failure.step)}[/]: {_e(r.failure.message)}")
            lines += [_e(line) for line in r.failure.console_lines()]
    m = verdict.model
    if m is not None:
        metrics = ", ".join(
            f"{k} {v:.4g}" + (f" (champion {m.baseline[k]:.4g}, {m.deltas.get(k, v - m.baseline[k]):+.4g})"
                              if k in m.baseline else "")
            for k, v in sorted(m.metrics.items()))
        gate = "[green]passed[/]" if m.passed else f"[red]failed[/] ({_e(m.reason or 'no reason')})"
        versus = f"{m.alias} v{m.champion_version}" if m.champion_version else f"no {m.alias} yet"
        lines.append(_e(f"model gate v{m.candidate_version or '?'} vs {versus}: ") + gate
                     + (_e(f"; {metrics}") if metrics else ""))
    lines.append(_e(f"deploy commit: {deploy_commit or '-'}"))
    alias = f" (alias {m.alias})" if m is not None else ""
    lines.append(_e(f"promoted version: {promoted_version + alias if promoted_version else '-'}"))
    if notifications is not None and notifications.deliveries:
        sent = sum(d.delivered for d in notifications.deliveries)
        lines.append(_e(f"notifications: {sent}/{len(notifications.deliveries)} delivered"
                        + "".join(f"; {d.webhook}: {d.error}" for d in notifications.failed)))
    for reason in verdict.reasons:
        lines.append(f"[red]✗[/] {_e(reason)}")
    path = critical_path(spans)
    if path is not None:
        lines.append(_e(path.line()))
    return Group(*[Text.from_markup(x) if isinstance(x, str) else x for x in lines])


def print_summary(console: Console, verdict: Verdict,
                  outcome: ReleaseOutcome | None = None, spans: Sequence[SpanData] = ()) -> None:
    """Print `summary_renderable` to `console`."""
    console.print(summary_renderable(verdict, outcome, spans))
