"""The critical path of a run: which chain of stages decided its wall time (pure, no clock).

Input is the Progress spans: (stage, lane, start, end[, ok]) in seconds of one clock. Walking
back from the stage that ended last, each step takes the stage that ended latest before the
current one started (what it waited for). A `wait for ...` span inside a stage (a platform
job waiting for the model) is idle time: the part of the stage after it follows whatever
ended when the wait did. Slack: how much later a lane off the path could have finished: the
time from its end to the next join of the path (a stage on another lane than the one before
it, or one that waited) — an upper bound where no wait span says when the lane was needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

WAIT_PREFIX = "wait for "  # a span of a lane doing nothing until another lane is done
WAIT_FOR_MODEL = WAIT_PREFIX + "model"
# what a stage is doing after its wait (the platform job's release build waits for the model)
AFTER_WAIT = {"test+build+push": "release build+push"}
EPS = 1e-6  # seconds: ends this close are a tie (one clock, read under Progress's lock)
SLACK_MIN = 0.05  # less slack than this is not worth a mention
QUIET_LANES = ("release", "model")  # named by their stage alone when printed

SpanData = Sequence[Any]  # (stage, lane, start, end[, ok]): the reports' Span is one


@dataclass(frozen=True)
class PathStage:
    """One stage (or the part of one after its wait) on the critical path."""

    lane: str
    stage: str
    start: float
    end: float
    ok: bool = True
    waited: bool = False  # this part began when a wait inside its stage ended

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    def label(self) -> str:
        name = self.stage if self.lane in QUIET_LANES else f"{self.lane} {self.stage}"
        return f"{name} {self.seconds:.1f} s" + ("" if self.ok else " ✗")


@dataclass(frozen=True)
class CriticalPath:
    """The chain that decided the wall time, the time between its stages, each lane's slack."""

    seconds: float
    stages: tuple[PathStage, ...]
    slack: tuple[tuple[str, float], ...] = ()

    @property
    def between_stages(self) -> float:
        """Wall time no stage on the path accounts for (verdict, imports, scheduling)."""
        return max(0.0, self.seconds - sum(s.seconds for s in self.stages))

    def line(self) -> str:
        """`critical path 23.4 s: train+gate 11.2 s → ... → publish 0.5 s; slack: ...`."""
        text = f"critical path {self.seconds:.1f} s: " + " → ".join(s.label() for s in self.stages)
        if self.between_stages >= 0.1:
            text += f" (+{self.between_stages:.1f} s between stages)"
        if self.slack:
            text += "; slack: " + ", ".join(f"{lane} {sec:.1f} s" for lane, sec in self.slack)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "stages": [{"lane": s.lane, "stage": s.stage, "seconds": round(s.seconds, 3),
                        "ok": s.ok} for s in self.stages],
            "between_stages": round(self.between_stages, 3),
            "slack": [{"lane": lane, "seconds": round(sec, 3)} for lane, sec in self.slack],
        }


def _parts(spans: Iterable[SpanData]) -> list[PathStage]:
    """Every stage as work, cut around the waits inside it (a wait itself is no work)."""
    rows = [PathStage(str(s[1]), str(s[0]), float(s[2]), float(s[3]),
                      bool(s[4]) if len(s) > 4 else True) for s in spans]
    waits = [r for r in rows if r.stage.startswith(WAIT_PREFIX)]
    parts: list[PathStage] = []
    for r in rows:
        if r.stage.startswith(WAIT_PREFIX):
            continue
        inside = sorted((w for w in waits if w.lane == r.lane and w.start >= r.start
                         and w.end <= r.end), key=lambda w: w.start)
        cursor, name = r.start, r.stage
        for w in inside:
            if w.start > cursor:
                parts.append(PathStage(r.lane, name, cursor, w.start, waited=cursor > r.start))
            cursor = max(cursor, w.end)
            name = AFTER_WAIT.get(r.stage, f"{r.stage} after the wait")
        parts.append(PathStage(r.lane, name, min(cursor, r.end), r.end, r.ok,
                               waited=bool(inside)))
    return parts


def _pick(candidates: list[PathStage], lane: str | None) -> PathStage | None:
    """The one that ended last; a tie (within EPS) goes to the same lane, then the longest."""
    if not candidates:
        return None
    last = max(c.end for c in candidates)
    tied = [c for c in candidates if c.end >= last - EPS]
    return min(tied, key=lambda c: (c.lane != lane, -c.seconds, c.lane, c.stage))


def critical_path(spans: Iterable[SpanData]) -> CriticalPath | None:
    """The chain of stages that decided the run's wall time; None without spans."""
    parts = _parts(list(spans))
    if not parts:
        return None
    begin, end = min(p.start for p in parts), max(p.end for p in parts)
    chain: list[PathStage] = []
    current = _pick(parts, None)
    while current is not None:
        chain.append(current)
        at = current.start
        current = _pick([p for p in parts if p.end <= at + EPS and p.start <= at
                         and p not in chain], current.lane)
    chain.reverse()
    return CriticalPath(seconds=end - begin, stages=tuple(chain), slack=_slack(parts, chain, end))


def _slack(parts: list[PathStage], chain: list[PathStage],
           end: float) -> tuple[tuple[str, float], ...]:
    """Per lane whose last stage is off the path: the time until the path's next join."""
    joins = [c.start for i, c in enumerate(chain)
             if i and (c.lane != chain[i - 1].lane or c.waited)]
    out: list[tuple[str, float]] = []
    lanes = sorted({p.lane for p in parts}, key=lambda n: min(p.start for p in parts
                                                              if p.lane == n))
    for lane in lanes:
        last = max((p for p in parts if p.lane == lane), key=lambda p: p.end)
        if last in chain:
            continue
        later = [t for t in joins if t >= last.end - EPS]
        seconds = (min(later) if later else end) - last.end
        if seconds >= SLACK_MIN:
            out.append((lane, seconds))
    return tuple(out)
