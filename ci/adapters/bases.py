"""Base images: does each platform job's base (build arg BASE) resolve on its runner? (adapter)

A Docker runner builds with buildx's `docker` driver, which takes a FROM image from the
daemon's own store before it pulls, so the first place to look is that store (`docker image
inspect` with the runner's DOCKER_HOST); then the registry the reference names, with one
manifest HEAD. Docker Hub names (no registry host) are asked at Docker Hub like any other:
where it is out of reach the lookup fails in a DNS error, and the build would fail the same way.
A Dagger engine has its own store, which we cannot see: only a registry's "no such manifest"
counts as missing there. A registry that refuses anonymous access proves nothing either way
(the runner's daemon may be logged in): `unchecked`, never a refusal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from ci.adapters import proc
from ci.adapters.inventory import docker_env
from ci.core import platforms
from ci.core.config import Config
from ci.core.errors import ConfigError, PlatformError, RegistryError, StepFailed, ToolMissing
from ci.core.oci import ACCEPT, ImageRef
from ci.core.plan import BaseCheck, Plan, RunnerInfo

INSPECT_TIMEOUT = 10.0
REGISTRY_TIMEOUT = 5.0
DOCKER_HUB = "registry-1.docker.io"
# a registry's answer to a manifest HEAD
Answer = Literal["found", "absent", "refused", "failed"]


def split_reference(reference: str) -> tuple[ImageRef, str]:
    """`host/repo:tag@digest` → (registry + repository, the tag or digest to ask for)."""
    name, _, digest = reference.partition("@")
    last = name.rpartition("/")[2]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    return ImageRef.parse(reference), digest or tag or "latest"


def _registry_name(ref: ImageRef) -> str:
    return "docker.io (Docker Hub)" if ref.registry == DOCKER_HUB else ref.registry


def inspect_local(reference: str, host: str, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(the image's platform, "") when the runner's store has it; (None, "") when it has not;
    (None, why) when the daemon could not say."""
    try:
        res = proc.run(["docker", "image", "inspect", "--format",
                        "{{.Os}}/{{.Architecture}}/{{.Variant}}", reference],
                       env=docker_env(host, environ), timeout=INSPECT_TIMEOUT, check=False,
                       step="docker image inspect")
    except (ToolMissing, StepFailed) as exc:
        return None, exc.message
    if res.ok:
        return res.stdout.strip().rstrip("/") or "unknown", ""
    text = (res.stderr.strip() or res.stdout.strip() or "no answer").splitlines()[-1]
    return None, "" if "no such image" in text.lower() else text[:300]


def inspect_all(references: list[str], host: str,
                environ: Mapping[str, str]) -> dict[str, str] | None:
    """Each reference's platform from ONE `docker image inspect` (the common case: every base
    is there, one process for all); None when any is missing, to be asked one by one."""
    try:
        res = proc.run(["docker", "image", "inspect", "--format",
                        "{{.Os}}/{{.Architecture}}/{{.Variant}}", *references],
                       env=docker_env(host, environ), timeout=INSPECT_TIMEOUT, check=False,
                       step="docker image inspect")
    except (ToolMissing, StepFailed):
        return None
    lines = res.stdout.strip().splitlines()
    if not res.ok or len(lines) != len(references):
        return None
    return {ref: line.strip().rstrip("/") for ref, line in zip(references, lines, strict=True)}


def ask_registry(reference: str, config: Config, environ: Mapping[str, str],
                 timeout: float = REGISTRY_TIMEOUT) -> tuple[Answer, str]:
    """One manifest HEAD at the registry of `reference` (the project's credentials only for
    the project's own registry), and what it means for the base image."""
    from ci.adapters.registry import Credentials, RegistryClient

    ref, tag = split_reference(reference)
    own = ImageRef.parse(config.project.image).registry == ref.registry
    creds = None
    if own:
        with contextlib.suppress(ConfigError):  # an unset password env: ask anonymously
            creds = Credentials.from_config(config.publish.auth, environ)
    client = RegistryClient(ref.registry, insecure=own and config.publish.insecure,
                            credentials=creds, timeout=timeout, attempts=1)
    where = _registry_name(ref)
    try:
        resp = client.request("HEAD", f"/v2/{ref.repository}/manifests/{tag}",
                              headers={"Accept": ACCEPT}, ok=(200, 401, 403, 404),
                              what="lookup")
    except RegistryError as exc:  # "cannot reach registry URL: why", "answered HTTP 503..."
        hub = "Docker Hub (the name has no registry host): " if ref.registry == DOCKER_HUB else ""
        return "failed", hub + exc.message.removeprefix("lookup: ")
    finally:
        client.close()
    if resp.status_code == 200:
        return "found", f"in registry {where}"
    if resp.status_code == 404:
        return "absent", f"registry {where} has no such manifest (HTTP 404)"
    return "refused", (f"registry {where} refused to say without credentials "
                       f"(HTTP {resp.status_code}); the runner may be logged in")


def _fits(image_platform: str, wanted: str) -> bool:
    """True when an image of `image_platform` runs as `wanted` (arm/v5 runs on arm/v7)."""
    try:
        return platforms.parse(image_platform).runs_on(platforms.parse(wanted))
    except PlatformError:
        return False


def check_base(reference: str, platform: str, runner: RunnerInfo, config: Config,
               environ: Mapping[str, str], local: str | None = None) -> BaseCheck:
    """Where `reference` resolves for a `platform` job placed on `runner` (`local`: its
    platform in the runner's store, when already inspected)."""
    def result(status: Literal["local", "registry", "missing", "unchecked"],
               detail: str) -> BaseCheck:
        return BaseCheck(reference=reference, runner=runner.name, status=status, detail=detail)

    notes: list[str] = []
    if runner.engine == "docker":
        found, why = (local, "") if local else inspect_local(reference, runner.host, environ)
        if found and _fits(found, platform):
            return result("local", f"in the image store of runner {runner.name}")
        if found:
            notes.append(f"the image store of runner {runner.name} has it only for {found}")
        elif why:
            notes.append(f"cannot inspect the image store of runner {runner.name}: {why}")
        else:
            notes.append(f"not in the image store of runner {runner.name}")
    answer, detail = ask_registry(reference, config, environ)
    notes.append(detail)
    if answer == "found":
        return result("registry", detail)
    if answer == "absent" or (answer == "failed" and runner.engine == "docker"):
        return result("missing", "; ".join(notes))
    if runner.engine == "dagger":
        notes.append("the Dagger engine's own store is not visible from here")
    return result("unchecked", "; ".join(notes))


def _stores(wanted: list[tuple[str, str, RunnerInfo]],
            environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """(runner, reference) → platform in that Docker runner's store: one inspect per runner,
    the runners side by side."""
    docker = list({r.name: r for _, _, r in wanted if r.engine == "docker"}.values())

    def store(runner: RunnerInfo) -> dict[tuple[str, str], str]:
        refs = sorted({ref for _, ref, r in wanted if r.name == runner.name})
        return {(runner.name, ref): platform for ref, platform in
                (inspect_all(refs, runner.host, environ) or {}).items()}

    if len(docker) <= 1:
        return store(docker[0]) if docker else {}
    with ThreadPoolExecutor(max_workers=min(8, len(docker))) as pool:
        return {k: v for found in pool.map(store, docker) for k, v in found.items()}


def check(config: Config, plan: Plan, environ: Mapping[str, str]) -> Plan:
    """The plan with each placed job's base image looked up on its runner (concurrently);
    unchanged when no base image is configured."""
    if not config.build.base_image:
        return plan
    runners = {r.name: r for r in plan.runners}
    wanted: list[tuple[str, str, RunnerInfo]] = []
    for job in plan.jobs:
        runner = runners.get(job.placement.runner or "")
        reference = config.build.base_for(platforms.parse(job.platform))
        if job.placement.kind != "unavailable" and runner is not None and reference:
            wanted.append((job.platform, reference, runner))
    if not wanted:
        return plan

    local = _stores(wanted, environ)

    def one(item: tuple[str, str, RunnerInfo]) -> BaseCheck:
        platform, reference, runner = item
        return check_base(reference, platform, runner, config, environ,
                          local.get((runner.name, reference)))

    settled = all((r.name, ref) in local and _fits(local[(r.name, ref)], p)
                  for p, ref, r in wanted)
    if settled or len(wanted) == 1:  # the stores answered: no process or request left to wait on
        checks = [one(item) for item in wanted]
    else:
        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            checks = list(pool.map(one, wanted))
    return plan.with_bases({item[0]: c for item, c in zip(wanted, checks, strict=True)})
