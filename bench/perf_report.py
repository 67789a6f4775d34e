"""BENCHMARKS.md's issue-18 sections: `ci` vs the same commands by hand, per example.

Every number is read from the figures (bench/perf_figures.py) of the same harness run; the
explanations are fixed text around those numbers.
"""

from __future__ import annotations

from typing import Any

from bench.fmt import kib, load, mb, med, ok, s, x
from bench.perf_figures import GOALS, figures
from bench.samples import summary


def _goals(figs: dict[str, dict[str, Any]], supply: dict[str, Any] | None) -> list[str]:
    out = ["## Issue 18 goals: `ci` vs the same commands by hand", "",
           "Each row: median (min-max, n) of `ci` and of `bench/byhand_build.sh` (the same "
           "docker/buildx commands per platform job, the same parallelism, then "
           "`imagetools create` with the release tags), ratio of medians, per-round ratio "
           "(the two ran back to back, alternating who went first), the 1-min load average at "
           "the samples' starts (2.0 = both cores busy).", "",
           "| figure | example | `ci` | by hand | ratio (per round) | load | goal | |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, f in figs.items():
        for key, label in (("new", "`ci build` / by hand, new app commit"),
                           ("warm", "`ci build` / by hand, warm (nothing changed in the images)")):
            v = f[key]
            out.append(f"| {label} | {name} | {s(v['ci'])} | {s(v['hand'])} | {x(v['ratio'])} "
                       f"({x(v['paired'])}) | {load(v['load'])} | ≤ {GOALS['build_ratio']:.2f}x "
                       f"| {ok(v['met'])} |")
        o = f["warm_outside"]
        out.append(f"| time outside the jobs, warm `ci build` | {name} | {s(o['ci'], nd=2)} | "
                   f"{s(o['hand'], nd=2)} | +{s(o['extra'], nd=2)} | {load(f['warm']['load'])} "
                   f"| ≤ {GOALS['outside']:.1f} s | {ok(o['met'])} |")
        for p, row in f["push"]["platforms"].items():
            out.append(f"| push step, {p} (Docker 20.10: temporary-tag route vs `docker push`) "
                       f"| {name} | {s(row['ci'], nd=2)} | {s(row['hand'], nd=2)} | "
                       f"{x(row['ratio'])} | {load(f['new']['load'])} | (report) | - |")
        r = f["run"]
        out.append(f"| `ci run` on a commit (trains) vs its bound: slowest of (train+gate, "
                   f"platform job) + smoke + 1 s | {name} | {s(r['run'])} | bound "
                   f"{s(r['bound'])} | over by {s(r['over'], nd=2)} | {load(r['load'])} | ≤ bound "
                   f"| {ok(r['met'])} |")
        out.append(f"| `ci run` on a commit vs `ci build` right after | {name} | {s(r['run'])} "
                   f"| `ci build` {s(r['build'])} | {x(r['ratio'])} | {load(r['load'])} | (report) "
                   "| - |")
        for n, row in f["scaling"]["rows"].items():
            out.append(f"| {n} platform(s), `--no-publish` (capacity {f['capacity']}) | {name} | "
                       f"{s(row['ci'])} | {s(row['hand'])} | {x(row['ratio'])} "
                       f"({x(row['paired'])}) | {load(row['load'])} | (report) | - |")
        for key, store in (("model", "embedded sqlite"), ("model_server", "mlflow server")):
            m = f.get(key)
            if not m:
                continue
            out.append(f"| model stage overhead beyond the script ({store}) | {name} | "
                       f"{s(m['overhead'], nd=2)} | script {s(m['script'])} | - | "
                       f"{load(m['load'])} | ≤ {GOALS['model_overhead']:.1f} s | {ok(m['met'])} |")
    if supply:
        out.append(f"| push, digest route (containerd store, skopeo) / today's route, same image "
                   f"| sampleapp, +200 MB layer (Supply chain run) | {supply.split(' | ')[0]} | | | | "
                   f"≤ {GOALS['push_route']:.1f}x | {supply.split(' | ', 1)[1]} |")
    return [*out, ""]


def _example(f: dict[str, Any]) -> list[str]:
    name = f["example"]
    out = [f"### {name}: {len(f['platforms'])} platforms ({', '.join(f['platforms'])}), "
           f"local capacity {f['capacity']}", ""]
    if f["sizes"]:
        out += ["Release image as the daemon stores it (uncompressed): " + ", ".join(
            f"{p} {mb(v)}" for p, v in f["sizes"].items()) + ".", ""]
    out += ["Steps of the new-app-commit builds (medians; `ci` records them in "
            "`.maci/history.json`, by hand from the script's marks):", "",
            "| platform | step | `ci` | by hand |", "| --- | --- | --- | --- |"]
    for p, both in f["steps"].items():
        for st in sorted(set(both["ci"]) | set(both["hand"])):
            out.append(f"| {p} | {st} | {s(both['ci'].get(st), nd=2)} | "
                       f"{s(both['hand'].get(st), nd=2)} |")
    o = f["new_outside"]
    out += ["", f"Outside the jobs on a new app commit: `ci` {s(o['ci'], nd=2)}, by hand "
            f"{s(o['hand'], nd=2)}. Blob bytes the registry received per build: `ci` "
            f"{kib(f['push']['ci_blob_bytes'])}, by hand {kib(f['push']['hand_blob_bytes'])} "
            "(new app layers and image configs: the base layers are already there).", ""]
    r = f["run"]
    out += [f"`ci run` on a commit that changes the app and the training script "
            f"(model reused: {sum(r['reused'])}/{len(r['reused'])}): {s(r['run'])}; "
            f"train+gate {s(r['train'])}; each platform job's own work (lane minus the wait "
            "for the model) " + ", ".join(f"{p} {s(v)}" for p, v in r["jobs"].items())
            + f"; the slowest platform's smoke {s(r['smoke'])}; decided by "
            f"{', '.join(r['decided_by'])}. Every stage span (medians, seconds from the "
            "process start; a lane's `test+build+push` includes waiting for a free slot on "
            "the runner and for the model):", "",
            "| lane/stage | start | end | seconds |", "| --- | --- | --- | --- |"]
    for k, v in r["spans"].items():
        out.append(f"| {k} | {s(med(v['start']), nd=2)} | {s(med(v['end']), nd=2)} | "
                   f"{s(med(v['seconds']), nd=2)} |")
    pred = f["prediction"]
    if pred:
        out += ["", "`ci plan`'s prediction after these runs vs the jobs measured on new app "
                "commits:", "", "| platform | predicted | measured | predicted / measured | basis |",
                "| --- | --- | --- | --- | --- |"]
        for p, v in pred.items():
            out.append(f"| {p} | {s(v['predicted'])} | {s(v['measured'])} | {x(v['ratio'])} | "
                       f"{v['basis']} |")
    return [*out, ""]


def _anatomy(data: dict[str, Any]) -> list[str]:
    rows = []
    for name, ex in (data.get("perf") or {}).items():
        samples = ex.get("anatomy") or []
        if not samples:
            continue
        cols = {k: summary([smp.get(k) for smp in samples])
                for k in ("seconds", "imports", "discovery", "jobs", "after_jobs",
                          "docker_calls", "git_calls")}
        rows.append(f"| {name} | {s(cols['seconds'])} | {s(cols['imports'], nd=2)} | "
                    f"{s(cols['discovery'], nd=2)} | {s(cols['jobs'])} | "
                    f"{s(cols['after_jobs'], nd=2)} | {s(cols['docker_calls'], '', 0)} | "
                    f"{s(cols['git_calls'], '', 0)} |")
    if not rows:
        return []
    imp = [smp for ex in (data.get("perf") or {}).values() for smp in ex.get("imports") or []]
    keys = [k for k in (imp[0] if imp else {}) if k != "total"]
    table = []
    if imp:
        table = ["", "`python -X importtime -c 'import ci.cli, ci.commands.build'` (what `ci build` "
                 "imports before its first docker call), each module's own time summed per "
                 f"top-level package: total {s(summary([i.get('total') for i in imp]), nd=3)}.",
                 "", "| package | seconds |", "| --- | --- |"]
        table += [f"| {k} | {s(summary([i.get(k) for i in imp]), nd=3)} |" for k in keys]
    return ["### Where a warm `ci build` spends its time outside the jobs", "",
            "`python -m bench.ci_trace build` (the console script with every subprocess start "
            "stamped): `imports` = Python start and `ci`'s imports up to the first docker call; "
            "`discovery` = `docker info`, base image, git source, leftover-container sweep, up "
            "to the first build; `jobs` = to the last job's `passed on` line; `after` = index, "
            "tags, history, output, exit.", "",
            "| example | wall | imports | discovery | jobs | after | docker calls | git calls |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, *table, ""]


def _findings(figs: dict[str, dict[str, Any]], data: dict[str, Any]) -> list[str]:
    out = ["### What the numbers show (issue 18)", ""]
    for name, f in figs.items():
        new, warm, o = f["new"], f["warm"], f["warm_outside"]
        out.append(
            f"- **{name}, `ci build` vs by hand**: new app commit {x(new['ratio'])}, warm "
            f"{x(warm['ratio'])}; outside the jobs `ci` spends {s(o['ci'], nd=2)} against "
            f"{s(o['hand'], nd=2)} by hand (+{s(o['extra'], nd=2)}).")
        r = f["run"]
        out.append(
            f"- **{name}, `ci run` on a commit**: {s(r['run'])} against a bound of "
            f"{s(r['bound'])} (over by {s(r['over'], nd=2)}); decided by "
            f"{', '.join(r['decided_by'])}. Beyond that chain the run spends the startup "
            f"({s(r['segments'].get('startup'), nd=2)}: interpreter and imports), the plan and "
            f"up-to-date check ({s(r['segments'].get('plan'), nd=2)}), publish, deploy and "
            f"promote ({s(r['segments'].get('publish'), nd=2)}, "
            f"{s(r['segments'].get('deploy'), nd=2)}, {s(r['segments'].get('promote'), nd=2)})"
            + (f", and, because training decided, the release build + model check + push that "
               f"must follow the gate ({s(r['after_gate'], nd=2)} from the gate's end to the "
               "last platform job's end; the model enters as the last layer, so that is one "
               "small layer per platform)." if r["decided_by"] == ["training"] else
               f". The deciding job waited for a free slot (capacity {f['capacity']} for "
               f"{len(f['platforms'])} platforms): its lane includes that wait, so the bound "
               "is already the capacity's, not the platforms'."))
        m, ms = f["model"], f.get("model_server")
        line = (f"- **{name}, model stage overhead**: {s(m['overhead'], nd=2)} on the embedded "
                "store" + (f", {s(ms['overhead'], nd=2)} against a server" if ms else "")
                + f" (goal ≤ {GOALS['model_overhead']:.1f} s) around a "
                f"{s(m['script'])} script.")
        mlflow = med((data.get("cli") or {}).get("import_mlflow") and summary(
            data["cli"]["import_mlflow"]))
        if (med(m["script"]) or 0) < (mlflow or 0):
            line += (f" The script is shorter than importing MLflow ({s(mlflow)} on this "
                     "machine, §5 below): the import `ci` runs on a background thread while "
                     "the script runs cannot hide behind it and lands on the stage's time, "
                     "before the outputs are logged, gated and registered; with training in a "
                     "container (`[model.container]`) the train stage's image build (cached) "
                     "and one `docker run` that reads the image's package versions for the "
                     "input hash come on top. A short script pays the full price of MLflow's "
                     "client; a long one (wine) hides it.")
        elif ms and not ms["met"]:
            line += (" Against the server, the calls before the script go over MLflow's REST "
                     "API (about 20 round trips to a 1-worker local server) and the gate, "
                     "registration and alias through MLflow's own client after it.")
        out.append(line)
        push = f["push"]["platforms"]
        out.append(
            f"- **{name}, push step**: the temporary-tag route of the classic image store "
            "(Docker 20.10 here: docker tag, docker push, resolve the digest, DELETE the "
            "temporary tag, untag) costs " + ", ".join(
                f"{p} {x(v['ratio'])}" for p, v in push.items())
            + " of a plain `docker push` of a tag; it is the price of not leaving a tag behind "
            "before the gates pass. The digest route (Docker ≥ 24 with the containerd store, "
            "skopeo by digest) has no temporary tag: Supply chain section.")
    anat = [smp for ex in (data.get("perf") or {}).values() for smp in ex.get("anatomy") or []]
    imports = summary([a.get("imports") for a in anat])
    if imports["median"] is not None:
        out.append(
            f"- **Cause of the time outside the jobs**: {s(imports, nd=2)} of it passes before "
            "`ci`'s first docker call: the interpreter start and `ci`'s imports (pydantic "
            "config models, httpx with its CLI extras, the engine and publish modules), which "
            "a shell script does not pay (table above: `ci`'s own modules first). Tried and "
            "not kept: starting the runner discovery on a thread while those modules import "
            "gave no measurable gain on these 2 cores (the imports are CPU-bound and the "
            "docker CLI and daemon need the other core). What would close it: fewer modules "
            "on the path to the first docker call (lazy engine and publish imports, no "
            "pydantic models built for sections a command does not use), or a resident "
            "process.")
    return [*out, ""]


def render(data: dict[str, Any], supply: str | None = None) -> list[str]:
    figs = figures(data)
    if not figs:
        return []
    out = _goals(figs, supply)
    out += ["## Issue 18 details per example", ""]
    for f in figs.values():
        out += _example(f)
    return out + _anatomy(data) + _findings(figs, data)
