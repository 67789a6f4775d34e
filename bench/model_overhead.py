"""The model stage's own cost, on both tracking stores: `python -m bench.model_overhead`.

What `bench.scenarios.model_stage` measures for BENCHMARKS.md (row 6), without the rest of
the harness (no registry, no dockerd, no git): `ci train --json` on a copy of examples/wine
with a param that changes the input hash but not the model, so every sample really trains,
logs, gates against the champion and registers. Once on the embedded sqlite store, once
against a real `mlflow server` (sqlite backend, proxied artifacts) started here and stopped
by its pid. Per sample: `seconds.overhead` (what `ci train` reports: the stage's time beyond
the script), the wall time of the whole command minus the script, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/model_overhead.py` as well as `-m`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.project import CI, EXAMPLE, clean_env, timed
from bench.scenarios import loadavg

MLFLOW = Path(sys.executable).parent / "mlflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`mlflow server` with the lean flags of tests/fixtures/mlflow_server.py."""
    (root / "artifacts").mkdir(parents=True)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = clean_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(
        [str(MLFLOW), "server", "--workers", "1", "--backend-store-uri",
         f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not _healthy(uri):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"mlflow server did not start: see {root / 'server.log'}")
        time.sleep(0.2)
    return server, uri


def project(root: Path) -> Path:
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(
        ".maci", "model", "__pycache__", "mlruns", ".pytest_cache"))
    return root


def train_once(root: Path, extra: dict[str, str]) -> dict[str, Any]:
    load = loadavg()
    res = timed([CI, "train", "--json", "-c", "ci.toml"], cwd=root,
                env=clean_env({"MACI_PROJECT__NAME": "wine-bench", **extra}))
    if res.returncode != 0:
        raise RuntimeError(f"ci train failed ({res.returncode}):\n{res.stdout[-2000:]}\n"
                           f"{res.stderr[-2000:]}")
    data = res.json()
    seconds = data.get("seconds") or {}
    script = float(seconds.get("script") or 0.0)
    return {"wall": res.seconds, "wall_minus_script": round(res.seconds - script, 3),
            **seconds, "reused": data["training"]["reused"], "passed": data.get("ok"),
            "load": load}


def store_samples(root: Path, reps: int, uri: str | None, say: bool) -> list[dict[str, Any]]:
    """One untimed `ci train` (schema, first champion), then `reps` timed ones."""
    params = tomllib.loads((root / "ci.toml").read_text())["model"]["params"]
    base = {"MACI_MLFLOW__TRACKING_URI": uri} if uri else {}
    out = []
    for i in range(reps + 1):
        extra = base | {"MACI_MODEL__PARAMS": json.dumps({**params, "max_iter": 2000 + i})}
        sample = train_once(root, extra)
        if say:
            print(f"[bench] {'warm-up' if i == 0 else f'sample {i}'}: overhead "
                  f"{sample.get('overhead')} s, script {sample.get('script')} s, wall "
                  f"{sample['wall']} s (load {sample['load'][0]:.2f})", file=sys.stderr, flush=True)
        if i:
            out.append(sample)
    return out


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def span(key: str) -> dict[str, float]:
        values = [float(s[key]) for s in samples if s.get(key) is not None]
        return {"median": round(statistics.median(values), 3), "min": min(values),
                "max": max(values)}

    return {"n": len(samples), **{k: span(k) for k in
                                   ("overhead", "script", "total", "wall", "wall_minus_script")},
            "load": [s["load"][0] for s in samples]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--store", choices=("sqlite", "server", "both"), default="both")
    parser.add_argument("--out", type=Path, help="write the raw samples here (JSON)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="maci-model-bench-"))
    results: dict[str, Any] = {"python": sys.version.split()[0], "nproc": os.cpu_count()}
    server = None
    try:
        if args.store in ("sqlite", "both"):
            samples = store_samples(project(tmp / "sqlite"), args.reps, None, True)
            results["sqlite"] = {"samples": samples, "summary": summary(samples)}
        if args.store in ("server", "both"):
            server, uri = start_server(tmp / "server")
            samples = store_samples(project(tmp / "server-project"), args.reps, uri, True)
            results["server"] = {"samples": samples, "summary": summary(samples)}
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    for store in ("sqlite", "server"):
        if store in results:
            s = results[store]["summary"]
            o, w = s["overhead"], s["wall_minus_script"]
            print(f"{store}: overhead {o['median']} s ({o['min']}-{o['max']}, n={s['n']}); "
                  f"wall - script {w['median']} s ({w['min']}-{w['max']}); script "
                  f"{s['script']['median']} s; load {s['load']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
