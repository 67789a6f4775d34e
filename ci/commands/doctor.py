"""`ci doctor`: what this machine and the configured services can do, as data."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ci.adapters import bases, binfmt, inventory, proc
from ci.core.config import Config
from ci.core.errors import StepFailed, ToolMissing
from ci.core.plan import RunnerInfo, default_runner, make_plan, runners_for


def _http_answers(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return True, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:  # 401 from /v2/ still means a registry answered
        return exc.code in (401, 403), f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)


def check_buildx(environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        res = proc.run(["docker", "buildx", "version"], env=environ, timeout=10, check=False)
    except (ToolMissing, StepFailed) as exc:
        return {"ok": False, "detail": str(exc)}
    return {"ok": res.ok, "detail": (res.stdout or res.stderr).strip().splitlines()[0:1]}


def base_report(config: Config, found: list[RunnerInfo],
                environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each platform's base image looked up on the runner the plan would place it on (the
    same check `ci plan` makes); `line` names the platform, the reference and the runner."""
    plan = bases.check(config, make_plan(config, found), environ)
    return [{"platform": j.platform, **j.base.model_dump(), "ok": not j.base.missing,
             "line": j.base.line(j.platform)} for j in plan.jobs if j.base is not None]


def push_report(found: list[RunnerInfo], environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each reachable Docker runner's push route: by digest (containerd image store:
    reproducible digests, no temporary tags) or the temporary-tag route, and how to switch."""
    from ci.adapters.engines.docker import DockerEngine
    from ci.adapters.engines.oci_route import ROUTE_DIGEST
    from ci.core.errors import CIError

    rows = []
    for r in found:
        if r.engine != "docker" or not r.reachable:
            continue
        try:
            info = DockerEngine(r.host, r.name, environ=environ).ping()
        except CIError as exc:
            rows.append({"runner": r.name, "route": "", "ok": False, "line": exc.message})
            continue
        digest = info["route"] == ROUTE_DIGEST
        line = (f"push by digest (containerd image store, Docker {info['version']}): "
                "reproducible digests, no temporary tags" if digest else
                f"temporary-tag push (Docker {info['version']}, classic image store"
                f"{'' if shutil.which('skopeo') else ' or no skopeo'}): digests differ per build; "
                "for push by digest and reproducible digests use Docker >= 24 with "
                '"features": {"containerd-snapshotter": true} in daemon.json, and skopeo')
        rows.append({"runner": r.name, "route": info["route"], "ok": True, "line": line})
    return rows


def deploy_layout(config: Config) -> dict[str, Any]:
    """What the deploy branch holds, for whoever points Argo CD at it (not a check)."""
    from ci.adapters.ci_env import strip_credentials
    from ci.stages.deploy import GUARD_FILE

    dc = config.deploy
    if dc is None:
        return {}
    folders = sorted({str(PurePosixPath(m).parent) for m in dc.manifests})
    remote = strip_credentials(dc.remote)
    return {"remote": remote, "branch": dc.branch, "manifests": list(dc.manifests),
            "paths": folders, "guard": GUARD_FILE,
            "line": f"branch {dc.branch} of {remote} holds {', '.join(dc.manifests)} (pinned to "
                    f"the index digest) and the guard {GUARD_FILE}: sync path "
                    f"{', '.join(folders)} of {dc.branch} with Argo CD"}


def run_doctor(
    config: Config | None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    env = dict(os.environ if environ is None else environ)
    runners = (
        runners_for(config, None, env.get("DOCKER_HOST", ""))
        if config
        else [default_runner("docker", env.get("DOCKER_HOST", ""))]
    )
    found = inventory.discover(runners, env)
    report: dict[str, Any] = {
        "runners": [r.model_dump() for r in found],
        "buildx": check_buildx(env),
        "binfmt": [h.as_dict() for h in binfmt.handlers()],
        "push": push_report(found, env),
        "dagger": {
            "cli": inventory.dagger_cli(env),
            "session": inventory.dagger_session_env(env),
        },
    }
    if config:
        from ci.adapters.registry import RegistryClient

        url = RegistryClient.for_image(config.project.image, config.publish, env).base_url + "/v2/"
        ok, detail = _http_answers(url)
        report["registry"] = {"url": url, "ok": ok, "detail": detail}
        uri = config.tracking_uri()
        if uri.startswith("http"):
            ok, detail = _http_answers(uri.rstrip("/") + "/health")
        else:
            folder = Path(uri.removeprefix("sqlite:///")).parent
            probe = folder if folder.exists() else config.root_path
            ok = os.access(probe, os.W_OK)
            detail = f"embedded store, {'writable' if ok else 'not writable'}: {folder}"
        report["mlflow"] = {"uri": uri, "ok": ok, "detail": detail}
        report["bases"] = base_report(config, found, env)
        if config.deploy is not None:
            report["deploy"] = deploy_layout(config)
    checks = [r["reachable"] for r in report["runners"]] + [report["buildx"]["ok"]]
    checks += [report[k]["ok"] for k in ("registry", "mlflow") if k in report]
    checks += [b["ok"] for b in report.get("bases", [])]
    report["ok"] = all(checks)
    return report
