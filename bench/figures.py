"""The seven figures of issue 8, computed from the raw samples (pure: JSON in, dict out).

Every figure is a median with min-max over its samples; ratios are taken between samples
of the SAME harness run. `missing(figures)` lists any figure a run failed to produce.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bench.samples import ratio, summary

TARGETS = {"overhead": 1.10, "warm_ratio": 0.10, "warm_seconds": 15.0, "fanout": 1.25,
           "cli": 0.5, "model_overhead": 0.5, "merge_blob_bytes": 0}
STEPS = ("build_test", "test", "build_release", "push")


def _at(samples: Iterable[Any], *path: str) -> dict[str, Any]:
    """Summary of `sample[path[0]][path[1]]...` over the samples (missing = not measured)."""
    values: list[float | None] = []
    for smp in samples:
        value: Any = smp
        try:
            for key in path:
                value = value[key]
        except (KeyError, TypeError):
            value = None
        values.append(value)
    return summary(values)


def _med(samples: Iterable[Any], get: Callable[[Any], float | None]) -> dict[str, Any]:
    values: list[float | None] = []
    for s in samples:
        try:
            values.append(get(s))
        except (KeyError, TypeError):
            values.append(None)
    return summary(values)


SEGMENTS = ("startup", "plan", "model + platform jobs", "smoke", "publish", "deploy", "promote",
            "rest")


def hand_segments(sample: dict[str, Any]) -> dict[str, float]:
    """byhand.sh's phases named like `ci`'s timeline segments."""
    ph = sample["phases"]
    out = {"model + platform jobs": round(ph.get("train", 0.0) + ph.get("platforms", 0.0), 3),
           "smoke": ph.get("smoke", 0.0), "publish": ph.get("index", 0.0),
           "deploy": ph.get("deploy", 0.0)}
    out["rest"] = round(sample["seconds"] - sum(out.values()), 3)
    return out


def _seg(samples: list[Any], name: str, get: Callable[[Any], dict[str, float]]) -> Any:
    return _med(samples, lambda s: get(s).get(name))["median"]


def overhead(rel: dict[str, list[Any]]) -> dict[str, Any]:
    cold, hand = rel["cold"], rel["hand"]
    ci_s, hand_s = _med(cold, lambda s: s["seconds"]), _med(hand, lambda s: s["seconds"])
    pairs = [ratio(c["seconds"], h["seconds"]) for c, h in zip(cold, hand, strict=False)]
    breakdown = {n: {"ci": _seg(cold, n, lambda s: s["segments"]),
                     "hand": _seg(hand, n, hand_segments)} for n in SEGMENTS}
    other = rel.get("hand_other") or []
    other_s = _med(other, lambda s: s["seconds"])
    r = ratio(ci_s["median"], hand_s["median"])
    return {"ci": ci_s, "hand": hand_s, "ratio": r, "paired": summary(pairs),
            "overlap": bool(hand and hand[0].get("overlap")),
            "hand_train": _med(hand, _train_seconds), "other": other_s,
            "other_train": _med(other, _train_seconds),
            "other_ratio": ratio(ci_s["median"], other_s["median"]),
            "ci_train": _at(cold, "stages", "model/train+gate"),
            "breakdown": breakdown, "target": TARGETS["overhead"],
            "met": r is not None and r <= TARGETS["overhead"]}


def _train_seconds(sample: dict[str, Any]) -> float | None:
    marks = sample.get("marks") or {}
    if "trained" not in marks or "train" not in marks:
        return None
    return round(float(marks["trained"]) - float(marks["train"]), 3)


def warm(rel: dict[str, list[Any]]) -> dict[str, Any]:
    """The no-op rerun (nothing changed) vs cold, and what a `--force` rerun redoes."""
    cold, noop, forced = rel["cold"], rel["warm"], rel.get("forced") or []
    c, w = _med(cold, lambda s: s["seconds"]), _med(noop, lambda s: s["seconds"])
    f = _med(forced, lambda s: s["seconds"])
    segs = {n: {"cold": _seg(cold, n, lambda s: s["segments"]),
                "warm": _seg(noop, n, lambda s: s["segments"]),
                "forced": _seg(forced, n, lambda s: s["segments"])} for n in SEGMENTS}
    names = sorted({k for smp in cold + forced for k in smp["stages"]})
    stages = {n: {"cold": _at(cold, "stages", n)["median"],
                  "forced": _at(forced, "stages", n)["median"]} for n in names}
    steps = {p: {st: _at(forced, "platforms", p, "durations", st) for st in STEPS}
             for p in sorted({p for smp in forced for p in smp["platforms"]})}
    r = ratio(w["median"], c["median"])
    return {
        "cold": c, "warm": w, "forced": f, "ratio": r, "forced_ratio": ratio(f["median"],
                                                                            c["median"]),
        "up_to_date": all(smp["up_to_date"] for smp in noop) if noop else None,
        "segments": segs, "stages": stages, "steps": steps,
        "forced_model_reused": all(smp["model"].get("reused") for smp in forced)
        if forced else None,
        "forced_blob_upload_bytes": _med(forced, lambda s: s["traffic"]["blob_upload_bytes"]),
        "warm_requests": _med(noop, lambda s: s["traffic"]["requests"]),
        "forced_new_index": all(smp["index_digest"] not in {c2["index_digest"] for c2 in cold}
                                for smp in forced) if forced else None,
        "target_ratio": TARGETS["warm_ratio"], "target_seconds": TARGETS["warm_seconds"],
        "met": r is not None and w["median"] is not None and r <= TARGETS["warm_ratio"]
        and w["median"] < TARGETS["warm_seconds"],
    }


def _job(samples: Sequence[Any], platform: str) -> dict[str, Any]:
    return _med(samples, lambda s: s["platforms"][platform]["seconds"])


def emulation(rel: dict[str, list[Any]], fan: dict[str, list[Any]],
              predicted: Any) -> dict[str, Any]:
    amd, arm = fan["amd64_alone"], fan["arm64_alone"]
    a, e = _job(amd, "linux/amd64"), _job(arm, "linux/arm64")
    steps = {}
    for st in STEPS[:3]:
        sa = _at(amd, "platforms", "linux/amd64", "durations", st)
        se = _at(arm, "platforms", "linux/arm64", "durations", st)
        steps[st] = {"native": sa["median"], "emulated": se["median"],
                     "ratio": ratio(se["median"], sa["median"])}
    cold = rel["cold"]
    pa, pe = _job(cold, "linux/amd64"), _job(cold, "linux/arm64")
    return {
        "native": a, "emulated": e, "ratio": ratio(e["median"], a["median"]), "steps": steps,
        "pipeline_native": pa, "pipeline_emulated": pe,
        "pipeline_ratio": ratio(pe["median"], pa["median"]),
        "pipeline_test_ratio": ratio(
            _med(cold, lambda s: s["platforms"]["linux/arm64"]["durations"]["test"])["median"],
            _med(cold, lambda s: s["platforms"]["linux/amd64"]["durations"]["test"])["median"]),
        "report_emulated_seconds": _med(cold, lambda s: s["emulated_seconds"]),
        "predicted": predicted,
    }


def fanout(fan: dict[str, list[Any]]) -> dict[str, Any]:
    amd = _med(fan["amd64_alone"], lambda s: s["seconds"])
    arm = _med(fan["arm64_alone"], lambda s: s["seconds"])
    two = _med(fan["two_runners"], lambda s: s["seconds"])
    one = _med(fan.get("one_runner") or [], lambda s: s["seconds"])
    slowest = max(v for v in (amd["median"], arm["median"]) if v is not None) \
        if amd["median"] is not None or arm["median"] is not None else None
    r = ratio(two["median"], slowest)
    return {
        "amd64_alone": amd, "arm64_alone": arm, "two_runners": two, "one_runner": one,
        "ratio": r, "ratio_vs_amd64": ratio(two["median"], amd["median"]),
        "one_runner_ratio": ratio(one["median"], slowest),
        "lanes": {p: _job(fan["two_runners"], p) for p in ("linux/amd64", "linux/arm64")},
        "runners": sorted({f"{p}@{j['runner']}" for s in fan["two_runners"]
                           for p, j in s["platforms"].items()}),
        "target": TARGETS["fanout"], "met": r is not None and r <= TARGETS["fanout"],
    }


def cli(data: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: summary(v) for k, v in data.items()}
    out.setdefault("teardown", summary([]))
    out.setdefault("import_mlflow", summary([]))
    out["target"] = TARGETS["cli"]
    out["met"] = all(out[k]["median"] is not None and out[k]["median"] <= TARGETS["cli"]
                     for k in ("help", "plan"))
    return out


def model(samples: list[Any], rel: dict[str, list[Any]]) -> dict[str, Any]:
    trained = [s for s in samples if not s.get("reused")]
    o = _med(trained, lambda s: s["overhead"])
    return {
        "overhead": o, "total": _med(trained, lambda s: s["total"]),
        "script": _med(trained, lambda s: s["script"]),
        "passed": all(s.get("passed") for s in trained) if trained else None,
        "pipeline_cold_overhead": _med(rel["cold"], lambda s: s["model"]["overhead"]),
        "pipeline_cold_script": _med(rel["cold"], lambda s: s["model"]["script"]),
        "pipeline_forced_reuse": _med(rel.get("forced") or [],
                                      lambda s: s["model"]["train_gate"]),
        "target": TARGETS["model_overhead"],
        "met": o["median"] is not None and o["median"] <= TARGETS["model_overhead"],
    }


def merge(rel: dict[str, list[Any]]) -> dict[str, Any]:
    cold = [smp for smp in rel["cold"] + (rel.get("forced") or []) if smp["publish_traffic"]]
    blob = _med(cold, lambda s: s["publish_traffic"]["blob_upload_bytes"])
    return {
        "publish_seconds": _med(cold, lambda s: s["published_seconds"]),
        "stage_seconds": _med(cold, lambda s: s["stages"]["release/publish"]),
        "requests": _med(cold, lambda s: s["publish_traffic"]["requests"]),
        "sent": _med(cold, lambda s: s["publish_traffic"]["sent"]),
        "received": _med(cold, lambda s: s["publish_traffic"]["received"]),
        "blob_upload_bytes": blob,
        "agents": sorted({a for s in cold for a in s["publish_traffic"]["agents"]}),
        "hand_seconds": _med(rel["hand"], lambda s: s["phases"]["index"]),
        "hand_requests": _med(rel["hand"], lambda s: s["index_traffic"]["requests"]),
        "hand_sent": _med(rel["hand"], lambda s: s["index_traffic"]["sent"]),
        "hand_blob_upload_bytes": _med(rel["hand"],
                                       lambda s: s["index_traffic"]["blob_upload_bytes"]),
        "met": blob["max"] == 0,
    }


def figures(data: dict[str, Any]) -> dict[str, Any]:
    rel, fan = data["release"], data["fanout"]
    return {
        "overhead": overhead(rel), "warm": warm(rel),
        "emulation": emulation(rel, fan, data.get("predicted_slowdown")),
        "fanout": fanout(fan), "cli": cli(data["cli"]), "model": model(data["model"], rel),
        "merge": merge(rel),
    }


REQUIRED = {
    "overhead": ("ratio",), "warm": ("ratio",), "emulation": ("ratio", "pipeline_ratio"),
    "fanout": ("ratio",), "model": ("overhead",), "merge": ("publish_seconds", "sent"),
}


def missing(figs: dict[str, Any]) -> list[str]:
    """Figures that came out empty (a scenario produced no usable sample)."""
    out = []
    for name, keys in REQUIRED.items():
        for key in keys:
            value = figs[name][key]
            if value is None or (isinstance(value, dict) and value.get("median") is None):
                out.append(f"{name}.{key}")
    for key in ("python", "help", "plan", "import_mlflow", "teardown"):
        if figs["cli"][key]["median"] is None:
            out.append(f"cli.{key}")
    return out
