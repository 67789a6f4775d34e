"""The benchmark harness: `python -m bench.run --quick|--full` (root: it starts a 2nd dockerd).

Starts its own registry (behind a byte-counting proxy) on a free port and works on copies
of examples/wine (and, for issue 18's figures, examples/bikes) in a temp folder; writes
every raw sample to a JSON file and renders BENCHMARKS.md from it. `--render FILE`
re-renders the Markdown from a saved JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py` as well as `python -m bench.run`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import model_overhead, perf, report, scenarios, stack, supply_chain
from bench.project import REPO

MODES: dict[str, dict[str, Any]] = {
    # rounds: cold `ci run` + by-hand pairs; warm: no-op reruns and forced: `--force` reruns
    # after each cold run; both_hands: also the by-hand variant with the other parallelism
    # examples/perf_*: issue 18's figures per example (bench/perf.py); server: the model
    # stage also against a real `mlflow server`
    "quick": {"rounds": 1, "warm": 1, "forced": 1, "both_hands": False, "fan_reps": 1,
              "one_runner": False, "model_reps": 1, "cli_reps": 5, "examples": ["wine"],
              "perf_rounds": 1, "perf_runs": 1, "perf_scaling": 1, "server": False},
    "full": {"rounds": 3, "warm": 2, "forced": 1, "both_hands": True, "fan_reps": 3,
             "one_runner": True, "model_reps": 3, "cli_reps": 20, "examples": ["wine", "bikes"],
             "perf_rounds": 3, "perf_runs": 3, "perf_scaling": 2, "server": True},
}


def _out(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (res.stdout or res.stderr).strip().splitlines()[0] if res.returncode == 0 else ""


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    osr = re.search(r'PRETTY_NAME="([^"]*)"', Path("/etc/os-release").read_text())
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    flags = re.search(r"flags: (\w+)", binfmt.read_text()) if binfmt.is_file() else None
    return {
        "nproc": int(_out(["nproc"]) or 0),
        "cpu": cpu.group(1) if cpu else "",
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "os": osr.group(1) if osr else "", "kernel": platform.release(),
        "docker_server": _out(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker_client": _out(["docker", "version", "--format", "{{.Client.Version}}"]),
        "buildx": _out(["docker", "buildx", "version"]),
        "qemu": _out(["qemu-aarch64-static", "--version"]),
        "binfmt_flags": flags.group(1) if flags else "",
        "registry": _out(["docker-registry", "--version"]),
        "git": _out(["git", "--version"]), "python": platform.python_version(),
        "mlflow": _out([sys.executable, "-c", "import importlib.metadata as m;"
                        "print(m.version('mlflow'))"]),
        "repo_commit": _out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }


def _cleanup_images(registry: str) -> None:
    """Remove the tags the bench left on the default daemon (their registry is gone)."""
    listed = subprocess.run(["docker", "images", "--digests", "--format",
                             "{{.Repository}} {{.Tag}} {{.Digest}}"],
                            capture_output=True, text=True).stdout.splitlines()
    ours = []
    for line in listed:
        repo, tag, digest = [*line.split(), "", "", ""][:3]
        if not (repo.startswith((f"{registry}/", "maci-hand/"))
                or (repo.startswith("maci-test/") and repo.endswith("-bench"))):
            continue
        if tag and tag != "<none>":
            ours.append(f"{repo}:{tag}")
        if digest and digest != "<none>":  # pushed images keep a repo@digest reference
            ours.append(f"{repo}@{digest}")
    if ours:
        subprocess.run(["docker", "rmi", "--no-prune", *ours], capture_output=True)


def _predicted_slowdown(bench: scenarios.Bench, project: Any) -> Any:
    """Any emulation estimate `ci plan --json` makes (none today: reported as such)."""
    plan = project.ci("plan", "--json")
    found = re.findall(r'"([a-z_]*(?:slowdown|estimate|predict)[a-z_]*)"\s*:\s*([^,}\n]+)',
                       plan.stdout)
    return {k: v.strip() for k, v in found} or None


NEEDS = {"bikes": ("maci/python:bookworm-armhf", "qemu-arm")}  # beyond wine's amd64 + arm64


def check_examples(examples: list[str]) -> None:
    """Fail before any work when an example's base image or binfmt handler is missing."""
    for name in examples:
        if name not in NEEDS:
            continue
        image, handler = NEEDS[name]
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
            raise SystemExit(f"bench: examples/{name} needs {image}: run "
                             'MACI_BASE_ARCHES="amd64 arm64 armhf" scripts/setup-stack.sh')
        if not Path(f"/proc/sys/fs/binfmt_misc/{handler}").is_file():
            raise SystemExit(f"bench: examples/{name} needs the {handler} binfmt handler")


def run(mode: str, keep: bool) -> dict[str, Any]:
    cfg = MODES[mode]
    check_examples(cfg["examples"])
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="maci-bench-"))
    reg, port = stack.start_registry(tmp / "registry")
    proxy = stack.CountingProxy(port).start()
    bench = scenarios.Bench(tmp, proxy)
    data: dict[str, Any] = {"mode": mode, "config": cfg, "machine": machine(),
                            "load_start": scenarios.loadavg(), "tmp": str(tmp),
                            "registry": bench.registry}
    daemon = None
    server: subprocess.Popen[bytes] | None = None
    try:
        bench.say(f"registry 127.0.0.1:{port}, proxy {bench.registry}, work dir {tmp}")
        data["seed_seconds"] = stack.seed_registry(bench.registry, tmp)
        bench.say(f"seeded base layers in {data['seed_seconds']:.1f} s")
        data["release"] = scenarios.release_rounds(bench, cfg["rounds"], cfg["warm"],
                                                  cfg["forced"], cfg["both_hands"])
        project = bench.first_ci
        assert project is not None
        data["model"] = scenarios.model_stage(bench, project, cfg["model_reps"])
        data["cli"] = scenarios.cli_startup(project, cfg["cli_reps"])
        data["predicted_slowdown"] = _predicted_slowdown(bench, project)
        t0 = time.perf_counter()
        daemon = stack.start_second_daemon([stack.BASES["arm64"]])  # it runs arm64 only
        data["second_daemon_seconds"] = round(time.perf_counter() - t0, 3)
        bench.say(f"second dockerd up with the base images in {data['second_daemon_seconds']} s")
        fan = scenarios.fanout_project(bench, project, daemon.host)
        data["fanout"] = scenarios.fanout(bench, fan, cfg["fan_reps"], cfg["one_runner"])
        daemon.stop()
        daemon = None
        uri = None
        if cfg["server"]:
            server, uri = model_overhead.start_server(tmp / "mlflow-server")
        data["perf"] = {name: perf.example(bench, name, cfg, uri) for name in cfg["examples"]}
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        if daemon is not None:
            daemon.stop()
        proxy.stop()
        reg.stop()
        _cleanup_images(bench.registry)
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    data["load_end"] = scenarios.loadavg()
    data["started"] = datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds")
    data["duration_seconds"] = round(time.time() - started, 1)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="one sample each (< 3 min)")
    group.add_argument("--full", action="store_true", help="several samples (~8 min)")
    group.add_argument("--render", type=Path, help="re-render Markdown from a results JSON")
    parser.add_argument("--out", type=Path, help="results JSON (default: per mode)")
    parser.add_argument("--markdown", type=Path, help="Markdown file (default: per mode)")
    parser.add_argument("--keep", action="store_true", help="keep the temp work folder")
    args = parser.parse_args(argv)
    data = json.loads(args.render.read_text()) if args.render else None
    mode = data["mode"] if data else ("full" if args.full else "quick")
    quick_dir = Path(tempfile.gettempdir()) / "maci-bench-quick"
    out = args.out or (REPO / "bench" / "results.json" if mode == "full"
                       else quick_dir / "results.json")
    markdown = args.markdown or (REPO / "BENCHMARKS.md" if mode == "full"
                                 else quick_dir / "BENCHMARKS.md")
    if data is None:
        data = run(mode, args.keep)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"raw samples: {out}", file=sys.stderr)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    supply_json = REPO / "bench" / "supply_chain.json"
    supply = json.loads(supply_json.read_text()) if supply_json.is_file() else None
    text = report.render(data, supply=supply)
    if supply:  # its own harness and run: re-rendered from its raw samples, kept at the end
        text = text.rstrip("\n") + "\n\n" + supply_chain.render(supply).rstrip("\n") + "\n"
    markdown.write_text(text)
    print(f"report: {markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
