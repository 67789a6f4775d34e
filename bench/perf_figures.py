"""Issue 18's table, computed from one example's raw samples (pure: JSON in, dict out).

Each row: `ci` and by hand as median (min-max, n), the ratio of medians, the per-round ratio
(the two sides ran back to back), the goal and whether it is met.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bench.samples import ratio, summary

GOALS = {"build_ratio": 1.05, "outside": 0.2, "push_route": 0.7, "run_slack": 1.0,
         "model_overhead": 0.5}


def _sum(items: Iterable[Any], get: Callable[[Any], float | None]) -> dict[str, Any]:
    values: list[float | None] = []
    for item in items:
        try:
            values.append(get(item))
        except (KeyError, TypeError, ValueError):
            values.append(None)
    return summary(values)


def _load(items: Iterable[Any]) -> dict[str, Any]:
    return _sum(items, lambda s: s["load"][0])


def _pair(ci: list[Any], hand: list[Any], key: str = "seconds") -> dict[str, Any]:
    return summary([ratio(c[key], h[key]) for c, h in zip(ci, hand, strict=False)])


def versus(ci: list[Any], hand: list[Any], goal: float | None = None) -> dict[str, Any]:
    """Wall time of `ci` vs by hand over the same scenario."""
    c, h = _sum(ci, lambda s: s["seconds"]), _sum(hand, lambda s: s["seconds"])
    r = ratio(c["median"], h["median"])
    return {"ci": c, "hand": h, "ratio": r, "paired": _pair(ci, hand),
            "load": _load([*ci, *hand]), "goal": goal,
            "met": None if goal is None else r is not None and r <= goal}


def outside(ci: list[Any], hand: list[Any]) -> dict[str, Any]:
    """Seconds outside the jobs (wall minus the span of the jobs) on both sides."""
    c, h = _sum(ci, lambda s: s["outside"]), _sum(hand, lambda s: s["outside"])
    extra = None if c["median"] is None or h["median"] is None else round(
        c["median"] - h["median"], 3)
    return {"ci": c, "hand": h, "extra": extra, "goal": GOALS["outside"],
            "met": c["median"] is not None and c["median"] <= GOALS["outside"]}


def steps(samples: list[Any], platform: str) -> dict[str, dict[str, Any]]:
    names = sorted({k for s in samples for k in s["jobs"].get(platform, {}).get("steps", {})})
    return {n: _sum(samples, lambda s, n=n: s["jobs"][platform]["steps"][n]) for n in names}


def push(builds: dict[str, list[Any]], platforms: list[str]) -> dict[str, Any]:
    """Per platform: the push step of `ci build` (its route) vs `docker push` by hand, and
    the push's share of the job; blob bytes the registry received per build."""
    rows = {}
    for p in platforms:
        c = _sum(builds["ci_new"], lambda s, p=p: s["jobs"][p]["steps"]["push"])
        h = _sum(builds["hand_new"], lambda s, p=p: s["jobs"][p]["steps"]["push"])
        share = _sum(builds["ci_new"], lambda s, p=p: s["jobs"][p]["steps"]["push"]
                     / s["jobs"][p]["seconds"])
        rows[p] = {"ci": c, "hand": h, "ratio": ratio(c["median"], h["median"]), "share": share}
    return {"platforms": rows,
            "ci_blob_bytes": _sum(builds["ci_new"], lambda s: s["traffic"]["blob_upload_bytes"]),
            "hand_blob_bytes": _sum(builds["hand_new"],
                                    lambda s: s["traffic"]["blob_upload_bytes"])}


def _span(run: dict[str, Any], lane: str, stage: str) -> float | None:
    for sp in run["spans"]:
        if sp["lane"] == lane and sp["stage"] == stage:
            return float(sp["seconds"])
    return None


def run_bound(run: dict[str, Any]) -> dict[str, Any]:
    """The goal for one `ci run`: slowest of (training + gate, each platform job's own work,
    i.e. its lane minus the wait for the model) + the smoke of one platform (the slowest
    platform's smoke span: smoke starts per platform as soon as its image exists) + 1 s."""
    train = _span(run, "model", "train+gate") or 0.0
    jobs = {}
    for p in run["platforms"]:
        lane = _span(run, p, "test+build+push") or 0.0
        jobs[p] = round(lane - (_span(run, p, "wait for model") or 0.0), 3)
    smokes = [float(sp["seconds"]) for sp in run["spans"] if sp["stage"] == "smoke"]
    smoke = max(smokes, default=0.0)
    slowest = max([train, *jobs.values()])
    bound = round(slowest + smoke + GOALS["run_slack"], 3)
    ends = {sp["stage"] if sp["lane"] == "model" else sp["lane"]: sp.get("end")
            for sp in run["spans"] if sp["stage"] in ("train+gate", "test+build+push")}
    lane_ends = [v for k, v in ends.items() if k != "train+gate" and v is not None]
    after_gate = None if ends.get("train+gate") is None or not lane_ends else round(
        max(lane_ends) - float(ends["train+gate"]), 3)
    return {"train": train, "jobs": jobs, "smoke": smoke, "bound": bound,
            "after_gate": after_gate,
            "decided_by": "training" if train >= max(jobs.values(), default=0.0) else
            max(jobs, key=lambda k: jobs[k]), "over": round(run["seconds"] - bound, 3)}


def _span_field(run: dict[str, Any], key: str, field: str) -> float | None:
    for sp in run["spans"]:
        if f"{sp['lane']}/{sp['stage']}" == key:
            return float(sp[field])
    return None


def run_vs_build(pairs: list[Any]) -> dict[str, Any]:
    bounds = [run_bound(p["run"]) for p in pairs]
    runs = [p["run"] for p in pairs]
    r = _sum(runs, lambda s: s["seconds"])
    b = _sum(pairs, lambda s: s["build"]["seconds"])
    segments = sorted({k for s in runs for k in s["segments"]})
    return {
        "run": r, "build": b, "ratio": ratio(r["median"], b["median"]),
        "bound": summary([x["bound"] for x in bounds]),
        "over": summary([x["over"] for x in bounds]),
        "train": summary([x["train"] for x in bounds]),
        "after_gate": summary([x["after_gate"] for x in bounds]),
        "smoke": summary([x["smoke"] for x in bounds]),
        "jobs": {p: summary([x["jobs"].get(p) for x in bounds])
                 for p in sorted({p for x in bounds for p in x["jobs"]})},
        "decided_by": sorted({x["decided_by"] for x in bounds}),
        "segments": {k: _sum(runs, lambda s, k=k: s["segments"][k]) for k in segments},
        "spans": {k: {f: _sum(runs, lambda s, k=k, f=f: _span_field(s, k, f))
                      for f in ("start", "end", "seconds")}
                  for k in dict.fromkeys(f"{sp['lane']}/{sp['stage']}"
                                         for s in runs for sp in s["spans"])},
        "reused": [bool(s["model"].get("reused")) for s in runs],
        "load": _load(runs),
        "met": all(x["over"] <= 0 for x in bounds) if bounds else False,
    }


def scaling(data: dict[str, list[Any]], capacity: int) -> dict[str, Any]:
    rows = {}
    n = 1
    while f"ci_{n}" in data:
        rows[n] = versus(data[f"ci_{n}"], data[f"hand_{n}"])
        rows[n]["outside"] = outside(data[f"ci_{n}"], data[f"hand_{n}"])
        n += 1
    return {"capacity": capacity, "rows": rows}


def model(samples: list[Any]) -> dict[str, Any]:
    o = _sum(samples, lambda s: s["overhead"])
    return {"overhead": o, "script": _sum(samples, lambda s: s["script"]),
            "total": _sum(samples, lambda s: s["total"]), "wall": _sum(samples, lambda s: s["wall"]),
            "passed": all(s.get("passed") for s in samples) if samples else None,
            "load": _load(samples), "goal": GOALS["model_overhead"],
            "met": o["median"] is not None and o["median"] <= GOALS["model_overhead"]}


def prediction(ex: dict[str, Any]) -> dict[str, Any]:
    """`ci plan`'s prediction after the runs vs the jobs measured in the new-commit builds."""
    out = {}
    for p, pred in (ex.get("predicted") or {}).items():
        got = _sum(ex["builds"]["ci_new"], lambda s, p=p: s["jobs"][p]["seconds"])
        out[p] = {"predicted": pred.get("seconds"), "basis": pred.get("basis"),
                  "measured": got, "ratio": ratio(pred.get("seconds"), got["median"])}
    return out


def example(ex: dict[str, Any]) -> dict[str, Any]:
    b = ex["builds"]
    plats = ex["platforms"]
    return {
        "example": ex["example"], "platforms": plats, "capacity": ex["capacity"],
        "new": versus(b["ci_new"], b["hand_new"], GOALS["build_ratio"]),
        "warm": versus(b["ci_warm"], b["hand_warm"], GOALS["build_ratio"]),
        "warm_outside": outside(b["ci_warm"], b["hand_warm"]),
        "new_outside": outside(b["ci_new"], b["hand_new"]),
        "steps": {p: {"ci": steps(b["ci_new"], p), "hand": steps(b["hand_new"], p)}
                  for p in plats},
        "push": push(b, plats), "run": run_vs_build(ex["run_build"]),
        "scaling": scaling(ex["scaling"], ex["capacity"]),
        "model": model(ex["model"]),
        "model_server": model(ex["model_server"]) if ex.get("model_server") else None,
        "prediction": prediction(ex), "sizes": ex.get("sizes") or {},
        "jobs_new": {p: _sum(b["ci_new"], lambda s, p=p: s["jobs"][p]["seconds"])
                     for p in plats},
        "seconds": ex.get("seconds"),
    }


def figures(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: example(ex) for name, ex in (data.get("perf") or {}).items()}


def missing(figs: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, f in figs.items():
        for key in ("new", "warm", "run", "model"):
            value = f[key].get("ratio") if key != "model" else f[key]["overhead"]["median"]
            if key == "run":
                value = f[key]["run"]["median"]
            if value is None:
                out.append(f"perf.{name}.{key}")
    return out
