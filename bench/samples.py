"""Reading one sample: stage spans, per-platform durations, registry traffic, model seconds.

Pure helpers over what a run left behind (the `ci --json` outcome, the GitLab metrics file
with one `maci_stage_seconds` line per stage span, the proxy's request log), plus the
statistics every figure uses (median with min-max).
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import statistics
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.stack import Hit

PUBLISH_GAP = 0.5  # seconds of registry silence (smoke runs) before the publish requests


_EVENT = re.compile(r"^\d\d:\d\d:\d\d (\S+) +(.+?) +(started|ok|FAILED)(?: ([0-9.]+) s)?(?: \(|: |$)")
# timeline groups, in pipeline order: (name, predicate on (lane, stage))
GROUPS: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("plan", lambda lane, st: lane == "release" and st in ("plan", "up-to-date check")),
    ("model + platform jobs", lambda lane, st: (lane == "model" and st != "promote")
     or ("/" in lane and st != "smoke")),
    ("smoke", lambda lane, st: st == "smoke"),
    ("publish", lambda lane, st: lane == "release" and st in ("deploy preflight", "publish")),
    ("deploy", lambda lane, st: lane == "release" and st == "deploy"),
    ("promote", lambda lane, st: lane == "model" and st == "promote"),
)


def spans(lines: Sequence[tuple[float, str]]) -> list[dict[str, Any]]:
    """Stage spans from `ci`'s stamped progress lines: lane, stage, start, end, seconds."""
    open_: dict[tuple[str, str], float] = {}
    out = []
    for t, line in lines:
        m = _EVENT.match(line)
        if not m:
            continue
        lane, stage, what, printed = m.groups()
        if what == "started":
            open_[(lane, stage)] = t
            continue
        start = open_.pop((lane, stage), t - float(printed or 0))
        out.append({"lane": lane, "stage": stage, "start": round(start, 3), "end": t,
                    "seconds": round(t - start, 3), "ok": what == "ok"})
    return out


def segments(span_list: Sequence[dict[str, Any]], total: float) -> dict[str, float]:
    """The run as consecutive segments: startup, the stage groups (each from its first start
    to its last end, so concurrent lanes count once), and the rest (exit, gaps)."""
    out: dict[str, float] = {}
    if not span_list:
        return {"startup": 0.0, "rest": round(total, 3)}
    out["startup"] = round(min(sp["start"] for sp in span_list), 3)
    for name, member in GROUPS:
        inside = [sp for sp in span_list if member(sp["lane"], sp["stage"])]
        if inside:
            out[name] = round(max(sp["end"] for sp in inside) - min(sp["start"] for sp in inside), 3)
    out["rest"] = round(total - sum(out.values()), 3)
    return out


def platforms(results: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """platform → placement, runner, per-step durations, job seconds, emulated seconds."""
    out = {}
    for r in results:
        durations = {k: float(v) for k, v in (r.get("durations") or {}).items()}
        out[r["platform"]] = {
            "placement": r["placement"], "runner": r["runner"], "status": r["status"],
            "durations": durations, "seconds": round(sum(durations.values()), 3),
            "emulated_seconds": float(r.get("emulated_seconds") or 0.0),
            "tests": (r.get("tests") or {}).get("total"),
        }
    return out


def script_seconds(db: Path, run_id: str) -> float | None:
    """The training script's own time, as the model stage recorded it on the MLflow run."""
    if not db.is_file() or not run_id:
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT value FROM tags WHERE run_uuid = ? AND key = ?",
                           (run_id, "maci.train.seconds")).fetchone()
    return float(row[0]) if row else None


# ------------------------------------------------------------------ registry traffic


def traffic(hits: Sequence[Hit]) -> dict[str, Any]:
    """Requests and body bytes per kind, and how many bytes were blob (layer/config) uploads."""
    kinds: dict[str, dict[str, int]] = {}
    for h in hits:
        k = kinds.setdefault(h.kind, {"requests": 0, "sent": 0, "received": 0})
        k["requests"] += 1
        k["sent"] += h.sent
        k["received"] += h.received
    return {
        "requests": len(hits),
        "sent": sum(h.sent for h in hits),
        "received": sum(h.received for h in hits),
        "blob_upload_bytes": sum(h.sent for h in hits if h.kind == "blob-upload"),
        "blob_uploads": sum(1 for h in hits if h.kind == "blob-upload" and h.method == "PUT"),
        "kinds": kinds,
        "agents": sorted({h.agent for h in hits}),
    }


def publish_window(hits: Sequence[Hit]) -> list[Hit]:
    """The publish step's requests: everything after the last pause in registry traffic.

    Platform jobs push, then smoke runs the images for seconds without touching the
    registry, then publish (index + tags) talks to it; deploy and promote never do.
    """
    start = 0
    for i in range(1, len(hits)):
        if hits[i].t - hits[i - 1].t >= PUBLISH_GAP:
            start = i
    return list(hits[start:])


def agent_hits(hits: Sequence[Hit], prefix: str) -> list[Hit]:
    return [h for h in hits if h.agent.startswith(prefix)]


# ------------------------------------------------------------------ statistics


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Median, min, max and n of the values that exist (None = not measured)."""
    got = [float(v) for v in values if v is not None]
    if not got:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(got), "median": round(statistics.median(got), 3),
            "min": round(min(got), 3), "max": round(max(got), 3)}


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return round(num / den, 3)


def marks(path: Path) -> dict[str, float]:
    """`phase epoch` lines (byhand.sh) → seconds from the first mark."""
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not rows:
        return {}
    t0 = float(rows[0][1])
    return {name: round(float(t) - t0, 3) for name, t in rows}


def phases(offsets: dict[str, float], order: Sequence[str]) -> dict[str, float]:
    """Durations of consecutive phases from their start offsets (`order` ends with 'done')."""
    return {a: round(offsets[b] - offsets[a], 3) for a, b in itertools.pairwise(order)
            if a in offsets and b in offsets}
