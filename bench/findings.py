"""The 'gaps and what would close them' section: each target's status, with this run's numbers.

The reasoning is fixed text; every number in it is read from the figures, so a rerun after
a fix shows the new numbers (and a met target drops its gap paragraph).
"""

from __future__ import annotations

from typing import Any


def _n(v: Any, nd: int = 1) -> str:
    if isinstance(v, dict):
        v = v.get("median")
    return "?" if v is None else f"{float(v):.{nd}f}"


def _get(d: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _sub(a: Any, b: Any) -> float | None:
    if isinstance(a, dict):
        a = a.get("median")
    if isinstance(b, dict):
        b = b.get("median")
    return None if a is None or b is None else float(a) - float(b)


def overhead(f: dict[str, Any]) -> list[str]:
    o, c = f["overhead"], f["cli"]
    seg = o["breakdown"]
    rest_gap = _sub(seg["rest"]["ci"], seg["rest"]["hand"])
    lines = [f"- **Orchestration overhead ({'met' if o['met'] else 'not met'}, "
             f"{_n(o['ratio'], 2)}x).** `ci` spends {_n(seg['rest']['ci'], 2)} s outside its "
             f"stages, mostly after the last one (by hand: {_n(seg['rest']['hand'], 2)} s). "
             "Python tearing down a process that imported MLflow costs "
             f"{_n(c['teardown'], 2)} s on its own; the `ci` console script already skips it "
             "(`os._exit(code)` once stdout/stderr are flushed and the verdict, record and "
             f"reports are written), which leaves the ~{_n(rest_gap)} s gap above."]
    if o["overlap"] and o["other"]["median"] is not None:
        lines.append(
            f"  The model stage ran beside the platform jobs; by hand the same overlap took "
            f"{_n(o['hand'])} s against {_n(o['other'])} s training first. "
            + ("On these 2 shared cores the overlap does not pay: training (CPU-bound imports) "
               "and the qemu tests slow each other down. Overlap only when the platform jobs "
               "run on other machines than the training (remote runners), or when the local "
               "machine has cores to spare."
               if (o["hand"]["median"] or 0) > (o["other"]["median"] or 0) else
               "The overlap pays here."))
    model_gap = _sub(o["ci_train"], o["hand_train"])
    lines.append(f"  In `ci`, train + gate + register took {_n(o['ci_train'])} s against "
                 f"{_n(o['hand_train'])} s for the bare script by hand: ~{_n(model_gap)} s more, "
                 "on the critical path because the release builds wait for the registered "
                 "model. That is the model stage's own cost (§6).")
    left = _sub(_sub(o["ci"], model_gap), c["teardown"])
    hand = _get(o, "hand", "median")
    if left is not None and hand:
        lines.append(
            f"  Without that cost and the teardown `ci` would take ~{_n(left)} s against "
            f"{_n(hand)} s by hand ({left / hand:.2f}x); what remains is process start "
            f"({_n(seg['startup']['ci'], 2)} s), plan, and the short steps between stages "
            "(verdict, deploy preflight, release record).")
    return lines


def warm(f: dict[str, Any]) -> list[str]:
    w = f["warm"]
    st, steps = w["stages"], w["steps"]
    arm_test = _get(steps, "linux/arm64", "test")
    amd_test = _get(steps, "linux/amd64", "test")
    smoke = sum(v["forced"] or 0.0 for k, v in st.items() if k.endswith("/smoke"))
    reuse = _get(st, "model/train+gate", "forced")
    rest = _get(w, "segments", "rest", "forced")
    head = (f"- **Warm no-op rerun ({'met' if w['met'] else 'not met'}, {_n(w['ratio'], 2)}x, "
            f"{_n(w['warm'])} s).** ")
    if w["up_to_date"]:
        head += ("The release record answers 'up to date' after the plan, a fingerprint "
                 "(source, tree, config, model inputs) and a check that the tags and the deploy "
                 "head are still in place; nothing is rebuilt, retested or pushed.")
    else:
        head += "The rerun redid the release (see the `--force` column for what it costs)."
    return [
        head,
        f"  What still costs on a rerun that must run the stages (`--force`, {_n(w['forced'])} s; "
        "the same as a commit that changes nothing in the images):",
        f"  - the tests run again on identical test images: {_n(arm_test)} s (arm64, the "
        f"critical lane) and {_n(amd_test)} s (amd64). Caching a passed JUnit result under "
        "(test image ID, platform, test command, env) skips them.",
        f"  - smoke runs again: {_n(smoke)} s (the platforms' smoke spans added up; they run "
        "in parallel). Keyed by the release image's layers and runtime config (not its "
        "labels), an unchanged image needs no new smoke test.",
        (f"  - the model stage reuses the run but still imports MLflow: {_n(reuse)} s. A local "
         "note of (input hash, champion version) -> (run, version, gate result) in the state "
         "dir, checked before importing MLflow, would make reuse ~0.1 s when the alias has "
         "not moved (verify it lazily, e.g. in the promote step that needs MLflow anyway)."
         if w.get("forced_model_reused") else
         f"  - `--force` retrains the model (a new run, gate and version): {_n(reuse)} s."),
        f"  - process exit and report writing: {_n(rest)} s (teardown is already skipped).",
        "  - on the classic image store (Docker 20.10 here) the BuildKit inside the daemon "
        "stamps each build's image config with the build time (SOURCE_DATE_EPOCH needs "
        "BuildKit >= 0.11), so every rerun pushes a new config blob "
        f"({_n(_get(w, 'forced_blob_upload_bytes', 'median'), 0)} bytes) and a new index "
        "digest, and deploys a new commit. On the containerd store (Docker >= 24) the images "
        "carry the commit time and no run id, the digest is reproducible and an unchanged "
        "re-release moves no tag and makes no deploy commit (Supply chain section).",
    ]


def fanout(f: dict[str, Any]) -> list[str]:
    fo = f["fanout"]
    arm_alone, arm_lane = fo["arm64_alone"], fo["lanes"].get("linux/arm64")
    head = (f"- **Fan-out ({'met' if fo['met'] else 'not met'}, {_n(fo['ratio'], 2)}x).** The "
            f"arm64 job took {_n(_get(arm_lane, 'median'))} s on the second runner while amd64 "
            f"ran on the first, against {_n(arm_alone)} s alone. Both daemons share the same 2 "
            "cores (and the machine's other tenants) and qemu is CPU-bound, ")
    if fo["met"]:
        head += ("yet the two jobs are small enough that running them side by side costs "
                 "little; the margin shrinks as the jobs grow or the machine gets busier.")
    else:
        head += ("so a second runner on the same CPUs cannot run two jobs at full speed. What "
                 "closes it is a runner with its own CPUs (another host: `[[runners]] host = "
                 "\"ssh://...\"`), ideally a native arm64 one, which also removes the emulation "
                 "cost of §3.")
    head += (" The tool's own share is the command around the lanes: "
             f"{_n(_sub(fo['two_runners'], _get(arm_lane, 'median')), 2)} s (start, plan with "
             "two daemons, exit).")
    return [head]


def model(f: dict[str, Any]) -> list[str]:
    mo, c = f["model"], f["cli"]
    imp = _sub(c["import_mlflow"], c["python"])
    return [
        f"- **Model stage overhead ({'met' if mo['met'] else 'not met'}, "
        f"{_n(mo['overhead'], 2)} s).** Importing MLflow costs {_n(imp, 2)} s on its own "
        "(`python -c 'import mlflow'` minus `python -c pass`), but it is off the path of a "
        "training: the run is created before the script by a small native client (MLflow's "
        "REST API over httpx for a server, SQL on the embedded store: `adapters/mlflow_rest`, "
        "`adapters/mlflow_sqlite`), MLflow itself is imported on a thread while the script runs "
        "(`adapters/mlflow_loader`), and the gate and the registration find it loaded. What "
        "remains is the tracking calls themselves (about 20 round trips: tags, the log "
        "artifact, alias lookup, gate, artifact check, register). A fresh embedded store (MLflow "
        "creates its schema) and a reused run (no script to overlap) still pay the import.",
    ]


def render(f: dict[str, Any]) -> list[str]:
    lines = ["## Gaps and what would close them", ""]
    lines += overhead(f) + warm(f) + fanout(f) + model(f)
    lines += [
        f"- **CLI startup ({'met' if f['cli']['met'] else 'not met'}).** `ci --help` "
        f"{_n(f['cli']['help'], 2)} s, `ci plan` {_n(f['cli']['plan'], 2)} s (`python -c pass`: "
        f"{_n(f['cli']['python'], 2)} s in the same run, the yardstick for how loaded the "
        "machine was; `ci plan` includes the `docker info` discovery and the base image "
        "lookups). Where a command's start goes: the import table in the issue-18 section.",
        f"- **Index merge ({'met' if f['merge']['met'] else 'not met'}).** The index is "
        "assembled from the pushed digests over the registry API: manifests and two small "
        "config blobs are read, one index and three tags written, no layer moves.",
        "",
    ]
    return lines
