"""Issue 18's figures for one example: `ci build` and `ci run` against the same docker
commands by hand (bench/byhand_build.sh), side by side in one harness run.

Per example: one `ci` copy and one by-hand copy, each pushing every commit to its own
repository of the bench registry (as a team's project does). `ci` and by hand alternate who
goes first in each round, so drift in the machine's load hits both sides alike.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from bench import ci_trace, samples
from bench.project import GIT_ENV, Project, clean_env, timed
from bench.scenarios import Bench, ci_release, loadavg
from ci.core import platforms, tags
from ci.core.config_sections import PublishConfig
from ci.core.results import SourceInfo
from ci.stages import history

BYHAND_BUILD = Path(__file__).resolve().parent / "byhand_build.sh"
ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "arm"}
DEBIAN_ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "armhf"}
# `linux/arm64: passed on local (emulated, 7.9 s)`: printed when a job ends
_JOB_LINE = re.compile(r"^(\S+): passed on (\S+) \((\w+), ([0-9.]+) s\)")
HAND_STEPS = ("build_test", "test", "build_release", "check", "push", "end")


def config_of(project: Project) -> dict[str, Any]:
    return tomllib.loads((project.root / project.config).read_text())


def base_for(template: str, platform: str) -> str:
    """The project's base image for one platform, expanded as `ci` expands it."""
    return platforms.expand(template, platforms.parse(platform))


def release_tags(conf: dict[str, Any], sha: str) -> list[str]:
    """The release tags `ci` writes for commit `sha` on main (no version tag): ci's own rule."""
    return tags.release_tags(PublishConfig.model_validate(conf.get("publish", {})),
                             SourceInfo(sha=sha, branch="main"))


# ------------------------------------------------------------------ one sample per side


def ci_build(bench: Bench, project: Project, label: str, *args: str) -> dict[str, Any]:
    """`ci build ARGS`: wall, each job's span (from its `passed on` line), the time outside
    the jobs, the steps `ci` recorded (history.json) and the registry traffic."""
    load = loadavg()
    mark = bench.proxy.mark()
    res, lines = project.ci_lines("build", *args)
    hits = bench.proxy.since(mark)
    res.check(f"ci build {' '.join(args)} ({label}) in {project.root}")
    jobs: dict[str, dict[str, Any]] = {}
    for t, line in lines:
        m = _JOB_LINE.match(line)
        if m:
            plat, runner, kind, secs = m.groups()
            jobs[plat] = {"end": t, "start": round(t - float(secs), 3), "seconds": float(secs),
                          "runner": runner, "placement": kind}
    steps = _history_steps(project)
    for plat, job in jobs.items():
        job["steps"] = steps.get(plat, {})
    sample = _with_outside({"label": label, "side": "ci", "seconds": res.seconds, "load": load,
                            "jobs": jobs, "traffic": samples.traffic(hits)})
    bench.say(f"ci build {label}: {res.seconds:.1f} s, outside the jobs "
              f"{sample['outside']:.2f} s (load {load[0]:.2f})")
    return sample


def _history_steps(project: Project) -> dict[str, dict[str, float]]:
    """The last run's per-platform step seconds, as `ci` recorded them for its predictions."""
    runs = history.load(project.root / ".maci")
    if not runs:
        return {}
    return {r.platform: dict(r.steps) for r in runs if r.run_id == runs[-1].run_id}


def _with_outside(sample: dict[str, Any]) -> dict[str, Any]:
    """Outside the jobs = wall time minus the span from the first job's start to the last
    job's end (process start, plan, the index and tags, exit: what no job accounts for)."""
    jobs = sample["jobs"].values()
    span = max(j["end"] for j in jobs) - min(j["start"] for j in jobs) if jobs else 0.0
    sample["jobs_span"] = round(span, 3)
    sample["outside"] = round(sample["seconds"] - span, 3)
    return sample


def _head(project: Project) -> str:
    return timed(["git", "rev-parse", "HEAD"], cwd=project.root).check("git rev-parse").stdout.strip()


def hand_build(bench: Bench, project: Project, label: str, platforms: list[str],
               push: bool, capacity: int) -> dict[str, Any]:
    """bench/byhand_build.sh on the by-hand copy: the same chain per platform, no tool."""
    conf = config_of(project)
    registered = json.loads((project.root / "model" / "registered.json").read_text())
    check = conf.get("model", {}).get("check_command") or []
    env = clean_env(GIT_ENV | {
        "PROJECT": str(project.root), "IMAGE": project.image, "NAME": f"{project.example}-hand",
        "PLATFORMS": " ".join(platforms),
        "BASES": " ".join(base_for(conf["build"]["base_image"], p) for p in platforms),
        "TEST_TARGET": conf["test"]["target"], "TEST_CMD": " ".join(conf["test"]["command"]),
        "JUNIT": conf["test"]["junit_path"], "RELEASE_TARGET": conf["build"]["target"],
        "MODEL_NAME": str(registered.get("name", "")),
        "MODEL_VERSION": str(registered.get("version", "")),
        "CHECK_CMD": " ".join(check), "CAPACITY": str(capacity), "PUSH": "1" if push else "0",
        "TAGS": " ".join(release_tags(conf, _head(project))),
    })
    load = loadavg()
    mark = bench.proxy.mark()
    res = timed(["bash", str(BYHAND_BUILD)], env=env).check(
        f"bench/byhand_build.sh ({label}) in {project.root}")
    hits = bench.proxy.since(mark)
    offsets = samples.marks(project.root / ".hand" / "marks")
    jobs = {}
    for plat in platforms:
        slug = plat.replace("/", "-")
        order = [f"{slug}:{s}" for s in HAND_STEPS if f"{slug}:{s}" in offsets]
        steps = {k.split(":")[1]: v for k, v in samples.phases(offsets, order).items()}
        start, end = offsets[f"{slug}:build_test"], offsets[f"{slug}:end"]
        jobs[plat] = {"start": start, "end": end, "seconds": round(end - start, 3),
                      "steps": steps}
    sample = _with_outside({"label": label, "side": "hand", "seconds": res.seconds,
                            "load": load, "jobs": jobs, "traffic": samples.traffic(hits)})
    bench.say(f"by hand {label}: {res.seconds:.1f} s, outside the jobs "
              f"{sample['outside']:.2f} s (load {load[0]:.2f})")
    return sample


# ------------------------------------------------------------------ scenarios


def setup(bench: Bench, example: str) -> tuple[Project, Project, dict[str, Any]]:
    """The `ci` copy's first release (untimed: caches, champion, deploy repo) and a by-hand
    copy holding the same registered model files."""
    ci_p = bench.project(f"{example}-ci", example)
    first = ci_release(bench, ci_p, f"{example} first release")
    hand_p = bench.project(f"{example}-hand", example)
    shutil.copytree(ci_p.root / "model", hand_p.root / "model", dirs_exist_ok=True)
    hand_build(bench, hand_p, "warm-up", config_of(hand_p)["project"]["platforms"], True, 2)
    return ci_p, hand_p, first


def capacity_of(project: Project) -> int:
    plan = project.ci("plan", "--json").check("ci plan --json").json()
    return int(sum(r["capacity"] for r in plan["runners"] if r.get("reachable")))


def build_rounds(bench: Bench, ci_p: Project, hand_p: Project, rounds: int,
                 capacity: int) -> dict[str, list[Any]]:
    """Per round: a new app commit (new app layers) and a commit that changes nothing in the
    images, each built and published by `ci build` and by hand."""
    platforms = config_of(ci_p)["project"]["platforms"]
    out: dict[str, list[Any]] = {"ci_new": [], "hand_new": [], "ci_warm": [], "hand_warm": []}
    for i in range(rounds):
        for side in (("ci", "hand") if i % 2 == 0 else ("hand", "ci")):
            if side == "ci":
                ci_p.bump()
                out["ci_new"].append(ci_build(bench, ci_p, "new app commit"))
                ci_p.touch_outside()
                out["ci_warm"].append(ci_build(bench, ci_p, "warm"))
            else:
                hand_p.bump()
                out["hand_new"].append(hand_build(bench, hand_p, "new app commit", platforms,
                                                  True, capacity))
                hand_p.touch_outside()
                out["hand_warm"].append(hand_build(bench, hand_p, "warm", platforms, True,
                                                   capacity))
    return out


def run_then_build(bench: Bench, ci_p: Project, reps: int) -> list[dict[str, Any]]:
    """`ci run release` on a commit that changes the app and the training script (so it
    trains, gates and registers), then `ci build` of the same commit right after."""
    out = []
    for _ in range(reps):
        ci_p.bump(model=True)
        run = ci_release(bench, ci_p, "run on a commit")
        out.append({"run": run, "build": ci_build(bench, ci_p, "right after the run")})
    return out


def scaling(bench: Bench, ci_p: Project, hand_p: Project, reps: int,
            capacity: int) -> dict[str, list[Any]]:
    """`ci build --no-publish` and by hand (no push) with the first 1, 2, 3 platforms of the
    example, a new app commit each time."""
    platforms = config_of(ci_p)["project"]["platforms"]
    out: dict[str, list[Any]] = {}
    for n in range(1, len(platforms) + 1):
        chosen = platforms[:n]
        ci_key, hand_key = f"ci_{n}", f"hand_{n}"
        out[ci_key], out[hand_key] = [], []
        for i in range(reps):
            for side in (("ci", "hand") if i % 2 == 0 else ("hand", "ci")):
                if side == "ci":
                    ci_p.bump()
                    out[ci_key].append(ci_build(bench, ci_p, f"{n} platform(s), no publish",
                                                "--no-publish", "-p", ",".join(chosen)))
                else:
                    hand_p.bump()
                    out[hand_key].append(hand_build(bench, hand_p, f"{n} platform(s), no push",
                                                    chosen, False, capacity))
    return out


def anatomy(bench: Bench, ci_p: Project, reps: int) -> list[dict[str, Any]]:
    """A warm `ci build` (a commit that changes nothing in the images) with every subprocess
    start stamped: where the time outside the jobs goes (bench/ci_trace.py)."""
    out = []
    for _ in range(reps):
        ci_p.touch_outside()
        load = loadavg()
        res = timed([sys.executable, "-m", "bench.ci_trace", "build", "-c", ci_p.config],
                    cwd=ci_p.root, env=ci_p.env({"PYTHONPATH": str(Path(__file__).parents[1])}))
        res.check(f"traced ci build in {ci_p.root}")
        phases = ci_trace.anatomy(res.stderr, res.seconds)
        out.append({"seconds": res.seconds, "load": load, **phases})
        bench.say(f"traced ci build: {res.seconds:.1f} s, {phases}")
    return out


def model_overhead(bench: Bench, ci_p: Project, reps: int,
                   tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """`ci train --json --retrain`: a real training + log + gate + register each time; the
    overhead is what `ci train` reports beyond the training script."""
    extra = {"MACI_MLFLOW__TRACKING_URI": tracking_uri} if tracking_uri else {}
    out = []
    for i in range(reps + (1 if tracking_uri else 0)):
        load = loadavg()
        res = ci_p.ci("train", "--json", "--retrain", extra=extra)
        res.check(f"ci train --retrain in {ci_p.root}")
        data = res.json()
        seconds = data.get("seconds") or {}
        sample = {"wall": res.seconds, **seconds, "passed": data.get("ok"), "load": load,
                  "store": "server" if tracking_uri else "sqlite"}
        bench.say(f"ci train ({sample['store']}): overhead {seconds.get('overhead')} s, script "
                  f"{seconds.get('script')} s, wall {res.seconds} s (load {load[0]:.2f})")
        if tracking_uri and i == 0:
            continue  # the first run against a new server creates the experiment: warm-up
        out.append(sample)
    return out


def image_sizes(hand_p: Project, platforms: list[str]) -> dict[str, int]:
    """Bytes of each platform's release image as the daemon stores it (uncompressed)."""
    out = {}
    short = timed(["git", "rev-parse", "--short=7", "HEAD"], cwd=hand_p.root).stdout.strip()
    for plat in platforms:
        ref = f"{hand_p.image}:hand-{short}-{plat.replace('/', '-')}"
        res = timed(["docker", "image", "inspect", "--format", "{{.Size}}", ref])
        if res.returncode == 0:
            out[plat] = int(res.stdout.strip())
    return out


def example(bench: Bench, name: str, cfg: dict[str, Any],
            tracking_uri: str | None) -> dict[str, Any]:
    """Every issue-18 scenario on one example."""
    started = time.time()
    ci_p, hand_p, first = setup(bench, name)
    capacity = capacity_of(ci_p)
    data: dict[str, Any] = {"example": name, "capacity": capacity, "first": first,
                            "platforms": config_of(ci_p)["project"]["platforms"]}
    data["builds"] = build_rounds(bench, ci_p, hand_p, cfg["perf_rounds"], capacity)
    data["sizes"] = image_sizes(hand_p, data["platforms"])
    data["run_build"] = run_then_build(bench, ci_p, cfg["perf_runs"])
    data["scaling"] = scaling(bench, ci_p, hand_p, cfg["perf_scaling"], capacity)
    data["anatomy"] = anatomy(bench, ci_p, cfg["perf_runs"])
    data["imports"] = [ci_trace.imports(["ci.cli", "ci.commands.build"], ci_p.env())
                       for _ in range(cfg["perf_runs"])]
    plan = ci_p.ci("plan", "--json").check("ci plan --json").json()
    data["predicted"] = {j["platform"]: {"seconds": j.get("predicted_seconds"),
                                         "emulated": j.get("predicted_emulated_seconds"),
                                         "basis": j.get("prediction_basis")}
                         for j in plan["jobs"]}
    data["model"] = model_overhead(bench, ci_p, cfg["model_reps"])
    if tracking_uri:
        data["model_server"] = model_overhead(bench, ci_p, cfg["model_reps"], tracking_uri)
    data["seconds"] = round(time.time() - started, 1)
    print(f"[bench] {name}: {data['seconds']} s", file=sys.stderr, flush=True)
    return data
