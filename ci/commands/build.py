"""`ci build`: every platform job of the plan in-process, then the shared publish path.

Also the helpers `ci job` and `ci merge` share with it (prepare specs, run them, publish),
so a CI matrix leg and the in-process run execute exactly the same code.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio

from ci import ci_env, fanout, tags
from ci.commands.plan import build_plan
from ci.config import Config
from ci.engines.base import Engine
from ci.errors import GateFailed, PlanUnavailable, UsageError
from ci.jobs import spec_for
from ci.plan import Plan
from ci.platforms import Platform
from ci.publish import PublishResult, index_annotations, publish
from ci.registry import RegistryClient
from ci.results import JobSpec, PlatformResult, SourceInfo


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_run_id(source: SourceInfo) -> str:
    """The CI system's run id, else a fresh local one (`MACI_RUN_ID` overrides both)."""
    if source.run_id:
        return source.run_id
    return f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    source: SourceInfo
    run_id: str
    specs: list[JobSpec]
    output_dir: Path


def prepare(
    config: Config,
    *,
    only: list[Platform] | None = None,
    engine: str = "docker",
    environ: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> Prepared:
    """Plan (fails before any work if a platform cannot be placed) and one spec per job."""
    env = dict(os.environ if environ is None else environ)
    plan = build_plan(config, only=only, engine=engine, environ=env)
    if not plan.ok:
        raise PlanUnavailable("; ".join(f"{j.platform}: {j.placement.reason}"
                                        for j in plan.unavailable))
    source = ci_env.detect(env, config.root_path)
    rid = run_id or new_run_id(source)
    out = config.state_path / "runs" / rid
    created = now_rfc3339()
    specs = [spec_for(config, job, source, rid, out, created=created) for job in plan.jobs]
    return Prepared(plan, source, rid, specs, out)


def engine_factory(
    name: str, registry: RegistryClient | None, *, push: bool,
    environ: Mapping[str, str] | None = None,
    before_release: Callable[[JobSpec], Awaitable[JobSpec]] | None = None,
) -> Callable[[JobSpec], Engine]:
    """The per-spec engine factory for an engine name (the one place engines are chosen)."""
    if name == "docker":
        from ci.engines.docker import engine_factory as docker_factory

        return docker_factory(registry, push=push, environ=environ,
                              before_release=before_release)
    raise UsageError(f"--engine {name!r}: only 'docker' runs platform jobs in this command")


def execute(
    prepared: Prepared,
    config: Config,
    *,
    engine: str = "docker",
    push: bool = True,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
) -> list[PlatformResult]:
    """Run all specs concurrently on their runners (bounded by each runner's capacity)."""
    return anyio.run(lambda: execute_async(prepared, config, engine=engine, push=push,
                                           environ=environ, on_result=on_result))


async def execute_async(
    prepared: Prepared,
    config: Config,
    *,
    engine: str = "docker",
    push: bool = True,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
    before_release: Callable[[JobSpec], Awaitable[JobSpec]] | None = None,
) -> list[PlatformResult]:
    """`execute` inside a running event loop (so other stages can run beside the jobs)."""
    env = dict(os.environ if environ is None else environ)
    registry = RegistryClient.for_image(config.project.image, config.publish, env) if push \
        else None
    capacity = {r.name: r.capacity for r in prepared.plan.runners}
    factory = engine_factory(engine, registry, push=push, environ=env,
                             before_release=before_release)
    replace = fanout.qemu_fallback(prepared.plan.runners, prepared.plan.fallback)
    try:
        return await fanout.run_jobs(prepared.specs, factory, capacity, replace=replace,
                                     on_result=on_result)
    finally:
        if registry:
            registry.close()


def check_budget(results: Sequence[PlatformResult], budget: float | None) -> None:
    """The emulation budget is a gate: too many emulated seconds refuse the publish."""
    spent = sum(r.emulated_seconds for r in results)
    if budget is not None and spent > budget:
        raise GateFailed(f"nothing published; emulated time {spent:.0f} s is over the "
                         f"budget of {budget:g} s (emulation.budget_seconds)")


def publish_results(
    config: Config,
    results: Sequence[PlatformResult],
    *,
    expected: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> PublishResult:
    """The one publish path of `ci build` and `ci merge`: gates, index, tags."""
    env = dict(os.environ if environ is None else environ)
    check_budget(results, config.emulation.budget_seconds)
    wanted = list(expected or config.project.platforms)
    source = results[0].source if results else SourceInfo()
    run_id = next((r.run_id for r in results if r.run_id), "")
    release = tags.release_tags(config.publish, source, run_id)
    client = RegistryClient.for_image(config.project.image, config.publish, env)
    try:
        return publish(results, wanted, config.project.image, release,
                       index_annotations(results, now_rfc3339()), client, dry_run=dry_run)
    finally:
        client.close()


def check_publishable(config: Config, only: list[Platform] | None, do_publish: bool) -> None:
    """A release holds every configured platform: a subset may be built, never published."""
    if not do_publish or not only:
        return
    missing = [p for p in config.project.platforms if p not in {str(o) for o in only}]
    if missing:
        raise UsageError(f"--platform leaves out {', '.join(missing)} of project.platforms: "
                         "a release publishes all of them; add --no-publish to build a subset")


def run_jobs(
    config: Config,
    *,
    only: list[Platform] | None = None,
    push: bool = True,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[PlatformResult], None] | None = None,
) -> tuple[Prepared, list[PlatformResult]]:
    """`ci build`'s first half: every planned platform job, pushed by digest unless `push`
    is off. Publishing is the caller's second step (`publish_results`), so a refused or
    failed publish can still report every job's result."""
    prepared = prepare(config, only=only, environ=environ)
    return prepared, execute(prepared, config, push=push, environ=environ, on_result=on_result)


def run_build(
    config: Config,
    *,
    only: list[Platform] | None = None,
    do_publish: bool = True,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[PlatformResult], PublishResult | None]:
    """Jobs then publish in one call (for library users); raises GateFailed when a platform
    failed, after the jobs ran, and nothing is published then."""
    check_publishable(config, only, do_publish)
    prepared, results = run_jobs(config, only=only, push=do_publish, environ=environ)
    if not do_publish:
        return results, None
    expected = [j.platform for j in prepared.plan.jobs]
    return results, publish_results(config, results, expected=expected, environ=environ)
