"""The measurements: each function runs real commands and returns raw samples (dicts).

Every sample gets its own copy of examples/wine (or a new commit in one), its own image
repository in the bench registry and its own state dir, so samples never share work they
should not, and nothing outside the bench's temp folder is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import samples
from bench.project import CI, GIT_ENV, Project, clean_env, timed
from bench.stack import CountingProxy

BYHAND = Path(__file__).resolve().parent / "byhand.sh"
HAND_PHASES = ("train", "platforms", "smoke", "index", "deploy", "done")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


@dataclass
class Bench:
    """The shared context: temp folder, the registry (through the counting proxy), a log."""

    tmp: Path
    proxy: CountingProxy
    verbose: bool = True
    counter: int = 0
    first_ci: Project | None = None

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"

    def say(self, text: str) -> None:
        if self.verbose:
            print(f"[bench] {text}", file=sys.stderr, flush=True)

    def project(self, kind: str, example: str = "wine") -> Project:
        self.counter += 1
        name = f"{kind}-{self.counter}"
        return Project.create(self.tmp / name, f"{self.registry}/bench/{name}", example)


# ------------------------------------------------------------------ ci run release


def ci_release(bench: Bench, project: Project, label: str, force: bool = False) -> dict[str, Any]:
    """One `ci run release --json`: wall time, stage spans, platform steps, traffic, model."""
    load = loadavg()
    mark = bench.proxy.mark()
    res, lines = project.ci_lines("run", "release", "--json", *(["--force"] if force else []))
    hits = bench.proxy.since(mark)
    res.check(f"ci run release ({label}) in {project.root}")
    out = res.json()
    verdict = out.get("verdict") or {}
    model = verdict.get("model") or {}
    span_list = samples.spans(lines)
    stages = {f"{sp['lane']}/{sp['stage']}": sp["seconds"] for sp in span_list}
    reused = bool(model.get("reused_run"))
    script = 0.0 if reused else samples.script_seconds(project.root / ".maci" / "mlflow.db",
                                                       model.get("run_id", ""))
    train_gate = stages.get("model/train+gate")
    published = out.get("published") or {}
    sample = {
        "label": label, "seconds": res.seconds, "load": load,
        "up_to_date": bool(out.get("up_to_date")), "spans": span_list, "stages": stages,
        "segments": samples.segments(span_list, res.seconds),
        "platforms": samples.platforms(verdict.get("platforms") or []),
        "emulated_seconds": verdict.get("emulated_seconds"),
        "model": {"reused": reused, "version": model.get("candidate_version"),
                  "train_gate": train_gate, "script": script,
                  "overhead": None if train_gate is None or script is None
                  else round(train_gate - script, 3)} if model else {},
        "published_seconds": published.get("seconds"),
        "index_digest": published.get("digest") or (out.get("release") or {}).get("index_digest"),
        "deploy_commit": (out.get("deploy") or {}).get("commit"),
        "traffic": samples.traffic(hits),
        "publish_traffic": samples.traffic(samples.publish_window(hits)) if published else None,
    }
    what = "up to date" if sample["up_to_date"] else "released"
    bench.say(f"ci run {label}: {res.seconds:.1f} s, {what} (load {load[0]:.2f})")
    return sample


def by_hand(bench: Bench, project: Project, overlap: bool) -> dict[str, Any]:
    """bench/byhand.sh on a fresh copy: the same commands, same critical path, no tool;
    `overlap` trains beside the platform chains' test halves (as `ci` may)."""
    conf = tomllib.loads((project.root / "ci.toml").read_text())
    env = clean_env(GIT_ENV | {
        "PROJECT": str(project.root), "IMAGE": project.image, "PY": sys.executable,
        "PARAMS": json.dumps(conf["model"]["params"]),
        "PAYLOAD": json.dumps(conf["smoke"]["payload"]), "OVERLAP": "1" if overlap else "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    })
    load = loadavg()
    mark = bench.proxy.mark()
    res = timed(["bash", str(BYHAND)], env=env).check(f"bench/byhand.sh in {project.root}")
    hits = bench.proxy.since(mark)
    offsets = samples.marks(project.root / ".hand" / "marks")
    bench.say(f"by hand{' (overlapped)' if overlap else ''}: {res.seconds:.1f} s "
              f"(load {load[0]:.2f})")
    steps = {}
    for arch in ("amd64", "arm64"):
        order = [f"{arch}:{s}" for s in ("build_test", "test", "build_release", "push", "end")]
        steps[arch] = {k.split(":")[1]: v for k, v in samples.phases(offsets, order).items()}
    return {
        "seconds": res.seconds, "load": load, "overlap": overlap, "marks": offsets,
        "phases": samples.phases(offsets, HAND_PHASES), "platform_steps": steps,
        "traffic": samples.traffic(hits),
        "index_traffic": samples.traffic(samples.agent_hits(hits, "containerd")),
        "index_digest": res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "",
    }


def overlapped(sample: dict[str, Any]) -> bool:
    """Did `ci` run the model stage beside the platform jobs (spans overlap in time)?"""
    model = [sp for sp in sample["spans"] if sp["lane"] == "model" and sp["stage"] == "train+gate"]
    lanes = [sp for sp in sample["spans"] if "/" in sp["lane"] and sp["stage"] != "smoke"]
    return any(m["start"] < lane["end"] and lane["start"] < m["end"]
               for m in model for lane in lanes)


def release_rounds(bench: Bench, rounds: int, warm_per_round: int, forced_per_round: int,
                   both_hands: bool) -> dict[str, list[Any]]:
    """Per round: a cold `ci run`, its no-op reruns (nothing changed), its `--force` reruns
    (every stage again, caches warm), and by-hand releases (the variant with `ci`'s own
    parallelism, or both variants); `ci` and by-hand alternate who goes first, so drift in
    the machine's load hits both sides alike."""
    out: dict[str, list[Any]] = {"cold": [], "warm": [], "forced": [], "hand": [],
                                 "hand_other": []}
    overlap: bool | None = None
    for i in range(rounds):
        order = ("ci", "hand") if i % 2 == 0 else ("hand", "ci")
        for side in order:
            if side == "hand":
                same = bool(overlap)
                out["hand"].append(by_hand(bench, bench.project("hand"), same))
                if both_hands:
                    out["hand_other"].append(by_hand(bench, bench.project("hand"), not same))
                continue
            project = bench.project("ci")
            bench.first_ci = bench.first_ci or project
            cold = ci_release(bench, project, "cold")
            out["cold"].append(cold)
            overlap = overlapped(cold) if overlap is None else overlap
            for _ in range(warm_per_round):
                out["warm"].append(ci_release(bench, project, "warm"))
            for _ in range(forced_per_round):
                out["forced"].append(ci_release(bench, project, "forced", force=True))
    return out


# ------------------------------------------------------------------ fan-out


def fanout_project(bench: Bench, model_from: Project, d2_host: str) -> Project:
    """A copy with a 2-runner config (the local daemon + the second daemon) and a model."""
    project = bench.project("fan")
    shutil.copytree(model_from.root / "model", project.root / "model")
    conf = (project.root / "ci.toml").read_text()
    (project.root / "ci-2runners.toml").write_text(
        conf.replace("[emulation]", f'[[runners]]\nname = "local"\nhost = ""\n\n'
                     f'[[runners]]\nname = "d2"\nhost = "{d2_host}"\n\n[emulation]', 1))
    return project


def platform_jobs(bench: Bench, project: Project, label: str, config: str,
                  only: str | None) -> dict[str, Any]:
    """`ci build --no-publish` (test + build, the platform jobs alone) after a new commit."""
    project.bump()
    args = ["build", "--no-publish", "--json"] + (["-p", only] if only else [])
    load = loadavg()
    project.config = config
    res = project.ci(*args).check(f"ci build {label}")
    project.config = "ci.toml"
    jobs = samples.platforms(res.json()["results"])
    bench.say(f"{label}: {res.seconds:.1f} s "
              + ", ".join(f"{p} {j['seconds']:.1f} s on {j['runner']}" for p, j in jobs.items()))
    return {"label": label, "seconds": res.seconds, "load": load, "platforms": jobs}


def fanout(bench: Bench, project: Project, reps: int, one_runner: bool) -> dict[str, list[Any]]:
    """Each platform alone on the local daemon; both on two runners (and on one runner)."""
    out: dict[str, list[Any]] = {"amd64_alone": [], "arm64_alone": [], "two_runners": [],
                                 "one_runner": []}
    platform_jobs(bench, project, "warm-up (two runners)", "ci-2runners.toml", None)
    for _ in range(reps):
        out["amd64_alone"].append(platform_jobs(bench, project, "amd64 alone", "ci.toml",
                                                "linux/amd64"))
        out["arm64_alone"].append(platform_jobs(bench, project, "arm64 alone", "ci.toml",
                                                "linux/arm64"))
        out["two_runners"].append(platform_jobs(bench, project, "both, two runners",
                                                "ci-2runners.toml", None))
        if one_runner:
            out["one_runner"].append(platform_jobs(bench, project, "both, one runner",
                                                   "ci.toml", None))
    return out


# ------------------------------------------------------------------ model stage, CLI


def model_stage(bench: Bench, project: Project, reps: int) -> list[dict[str, Any]]:
    """`ci train --json` with a param that changes the input hash but not the model (max_iter
    far above convergence): a real training + log + gate + register every time."""
    params = tomllib.loads((project.root / "ci.toml").read_text())["model"]["params"]
    out = []
    for i in range(reps):
        bench.counter += 1
        extra = {"MACI_MODEL__PARAMS": json.dumps({**params, "max_iter": 1000 + bench.counter})}
        res = project.ci("train", "--json", extra=extra)
        data = res.json()
        seconds = data.get("seconds") or {}
        out.append({"wall": res.seconds, "exit": res.returncode, **seconds,
                    "reused": data["training"]["reused"], "passed": data.get("ok"),
                    "load": loadavg()})
        bench.say(f"ci train {i + 1}: total {seconds.get('total')} s, script "
                  f"{seconds.get('script')} s, overhead {seconds.get('overhead')} s")
    return out


def cli_startup(project: Project, reps: int) -> dict[str, list[float]]:
    """Wall time of `python -c pass`, `ci --help`, `ci plan` (discovery included), and of
    `import mlflow` (to explain the model stage's overhead)."""
    env = project.env()
    cmds = {
        "python": [sys.executable, "-c", "pass"],
        "help": [CI, "--help"],
        "plan": [CI, "plan", "-c", project.config],
        "import_mlflow": [sys.executable, "-c", "import mlflow"],  # what the model stage pays
    }
    out: dict[str, list[float]] = {k: [] for k in cmds}
    for cmd in cmds.values():  # one untimed round: page cache, .pyc files
        subprocess.run(cmd, cwd=project.root, env=env, capture_output=True, timeout=60)
    for _ in range(reps):
        for name, cmd in cmds.items():
            res = timed(cmd, cwd=project.root, env=env, timeout=60)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr[-1000:]}")
            out[name].append(res.seconds)
    out["teardown"] = [teardown(project) for _ in range(max(2, reps // 4))]
    return out


TEARDOWN = """
import sys, time
from mlflow import MlflowClient
MlflowClient(sys.argv[1]).search_experiments()
print(time.time(), flush=True)
"""


def teardown(project: Project) -> float:
    """Seconds between a process's last line of work (MLflow client on the project's store)
    and its exit: the interpreter tearing the imported modules down."""
    db = project.root / ".maci" / "mlflow.db"
    proc = subprocess.Popen([sys.executable, "-c", TEARDOWN, f"sqlite:///{db}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=project.env())
    out, _ = proc.communicate(timeout=120)
    ended = time.time()
    return round(ended - float(out.strip().splitlines()[-1]), 3)
