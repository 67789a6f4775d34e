"""The plan: config + runner inventory → where each platform job runs, and what follows.

Pure data and a pure resolver (no I/O): tests build `RunnerInfo` objects directly, like
nox's manifest tests build sessions. `ci plan` prints a Plan; `ci run` executes one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ci.core import platforms
from ci.core.config import Config
from ci.core.data import Frozen
from ci.core.errors import PlatformError
from ci.core.platforms import Platform

PlacementKind = Literal["native", "emulated", "unavailable"]
# where a runner's native platform came from: the engine's own answer (`docker info`,
# Dagger's `defaultPlatform`), the `[[runners]] platform` declared in the config, or this host
PlatformSource = Literal["engine", "declared", "host"]
DEFAULT_RUNNER = "local"


class NativeChoice(Frozen):
    """A runner's native platform, where it came from, and what the plan should say about it."""

    native: str | None
    source: PlatformSource | None
    note: str = ""


def choose_native(
    declared: str | None,
    answered: str | None,
    *,
    error: str = "",
    host_platform: str | None = None,
) -> NativeChoice:
    """The engine's answer wins; the declared platform, then this host's, only stand in for it.

    `answered` is the engine's own platform (None: not reached at plan time, `error` says why);
    `host_platform` is this machine's platform when the engine runs here (the default engine),
    None for a runner host, where this machine's platform says nothing.
    """
    why = f" ({error})" if error else ""
    if answered:
        try:
            said = str(platforms.parse(answered))
        except PlatformError as exc:
            answered, why = None, f" (it answered {answered!r}: {exc})"
        else:
            if declared and str(platforms.parse(declared)) != said:
                return NativeChoice(native=said, source="engine", note=(
                    f"declared platform {declared} but the engine reports {said}: "
                    "using the engine's"))
            return NativeChoice(native=said, source="engine")
    if declared:
        return NativeChoice(native=str(platforms.parse(declared)), source="declared", note=(
            f"engine not reached at plan time{why}: using the declared platform {declared}"))
    if host_platform:
        return NativeChoice(native=host_platform, source="host", note=(
            f"engine not reached at plan time{why}: assuming this host's platform "
            f"{host_platform}"))
    return NativeChoice(native=None, source=None, note=(
        f"engine not reached at plan time{why} and no platform declared"))


class RunnerInfo(Frozen):
    """What discovery learned about one runner (a Docker daemon or a Dagger engine)."""

    name: str
    engine: Literal["docker", "dagger"]
    host: str = ""
    capacity: int = 1
    reachable: bool = False
    native: str | None = None
    emulates: list[str] = Field(default_factory=list)
    declared: str | None = None
    platform_source: PlatformSource | None = None
    note: str = ""
    version: str = ""
    error: str = ""

    @property
    def native_platform(self) -> Platform | None:
        return platforms.parse(self.native) if self.native else None

    def can_emulate(self, platform: Platform) -> bool:
        return any(platform.runs_on(platforms.parse(p)) for p in self.emulates)

    @property
    def native_from(self) -> str:
        """Where `native` came from, for a placement's reason ("" when the engine said so
        and nothing contradicts it)."""
        if self.platform_source == "declared":
            return "declared; engine not reached at plan time"
        if self.platform_source == "host":
            return "this host's platform; engine not reached at plan time"
        if self.platform_source == "engine" and self.note:
            return f"the engine's answer; declared {self.declared}"
        return ""


class Placement(Frozen):
    kind: PlacementKind
    runner: str | None = None
    engine: str | None = None
    host: str = ""
    reason: str = ""


# where a job's base image was found: the placed runner's own image store, the registry; or
# not found (the job would fail pulling it), or not decidable from here (no verdict)
BaseStatus = Literal["local", "registry", "missing", "unchecked"]


class BaseCheck(Frozen):
    """Whether a platform job's base image (build arg BASE) resolves on its runner."""

    reference: str
    runner: str
    status: BaseStatus
    detail: str = ""

    @property
    def missing(self) -> bool:
        return self.status == "missing"

    def line(self, platform: str) -> str:
        """`linux/arm/v7: base image X not found on runner local (why)`; or how it resolved."""
        if self.missing:
            return (f"{platform}: base image {self.reference} not found on runner "
                    f"{self.runner} ({self.detail})")
        return f"{platform}: base image {self.reference}: {self.status} ({self.detail})"


class PlatformJob(Frozen):
    """Test + build + push-by-digest for one platform, placed on one runner; `base` is set
    once the base image was looked up on that runner (None: no base image, or not looked up);
    the predicted seconds once the job history was read (core/prediction; None: no basis)."""

    platform: str
    placement: Placement
    base: BaseCheck | None = None
    predicted_seconds: float | None = None
    predicted_emulated_seconds: float | None = None
    prediction_basis: str = ""


class TrainingJob(Frozen):
    command: list[str]
    registered_model: str
    alias: str
    tracking_uri: str
    thresholds: dict[str, dict[str, float | bool | None]]


class PublishTarget(Frozen):
    image: str
    tags: list[str]


class DeployTarget(Frozen):
    remote: str
    branch: str
    manifests: list[str]


class Plan(Frozen):
    project: str
    image: str
    runners: list[RunnerInfo]
    jobs: list[PlatformJob]
    training: TrainingJob | None
    gates: list[str]
    publish: PublishTarget
    deploy: DeployTarget | None
    fallback: str
    emulation_budget_seconds: float | None

    @property
    def ok(self) -> bool:
        """Every job placed, and no job's base image known to be missing on its runner."""
        return not self.unavailable and not self.missing_bases

    @property
    def unavailable(self) -> list[PlatformJob]:
        return [j for j in self.jobs if j.placement.kind == "unavailable"]

    @property
    def missing_bases(self) -> list[PlatformJob]:
        return [j for j in self.jobs if j.base is not None and j.base.missing]

    def problems(self) -> list[str]:
        """One line per reason the plan cannot run: an unplaced job, a missing base image."""
        return ([f"{j.platform}: {j.placement.reason}" for j in self.unavailable]
                + [j.base.line(j.platform) for j in self.missing_bases if j.base])

    def with_bases(self, checks: dict[str, BaseCheck]) -> Plan:
        """The same plan, each job carrying the base check of its platform (if any)."""
        jobs = [j.model_copy(update={"base": checks.get(j.platform, j.base)}) for j in self.jobs]
        return self.model_copy(update={"jobs": jobs})

    def job(self, platform: str | Platform) -> PlatformJob:
        wanted = str(platforms.parse(str(platform)))
        for job in self.jobs:
            if job.platform == wanted:
                return job
        raise KeyError(wanted)


def default_runner(engine: str, docker_host: str = "") -> RunnerInfo:
    """The runner used when the config names none: the local daemon or default engine."""
    return RunnerInfo(name=DEFAULT_RUNNER, engine=engine, host=docker_host, capacity=2)  # type: ignore[arg-type]


def _place(
    platform: Platform,
    runners: list[RunnerInfo],
    load: dict[str, int],
    fallback: str,
) -> Placement:
    def pick(cands: list[RunnerInfo]) -> RunnerInfo:
        return min(cands, key=lambda r: (load[r.name] / r.capacity, runners.index(r)))

    reachable = [r for r in runners if r.reachable]
    native = [r for r in reachable if r.native_platform and platform.runs_on(r.native_platform)]
    down = [
        r
        for r in runners
        if not r.reachable
        and r.declared
        and platform.runs_on(platforms.parse(r.declared))
    ]
    down_note = "; ".join(f"runner {r.name!r} unreachable: {r.error or 'no answer'}" for r in down)
    if native:
        chosen = pick(native)
        load[chosen.name] += 1
        source = f" ({chosen.native_from})" if chosen.native_from else ""
        return Placement(
            kind="native", runner=chosen.name, engine=chosen.engine, host=chosen.host,
            reason=f"runner {chosen.name!r} is {chosen.native}{source}",
        )
    if fallback == "qemu":
        emulators = [r for r in reachable if r.can_emulate(platform)]
        if emulators:
            chosen = pick(emulators)
            load[chosen.name] += 1
            why = f"no native {platform} runner"
            why += f" ({down_note})" if down_note else ""
            return Placement(
                kind="emulated", runner=chosen.name, engine=chosen.engine, host=chosen.host,
                reason=f"{why}; qemu on {chosen.name!r} ({chosen.native})",
            )
        reason = f"no native {platform} runner and no reachable runner can emulate it"
        reason += " (register qemu with `ci setup-qemu`)"
    else:
        reason = f"no native {platform} runner and fallback is 'fail'"
    if down_note:
        reason += f"; {down_note}"
    return Placement(kind="unavailable", reason=reason)


def make_plan(
    config: Config,
    inventory: list[RunnerInfo],
    *,
    only: list[Platform] | None = None,
) -> Plan:
    """Place every wanted platform on a runner; the result says what would run where."""
    wanted = only if only else config.platforms
    load = {r.name: 0 for r in inventory}
    jobs = [
        PlatformJob(
            platform=str(p), placement=_place(p, inventory, load, config.emulation.fallback)
        )
        for p in wanted
    ]
    training = None
    gates = [f"tests pass on {p}" for p in wanted]
    if config.model:
        m = config.model
        training = TrainingJob(
            command=list(m.train_command),
            registered_model=m.registered_model,
            alias=m.alias,
            tracking_uri=config.tracking_uri(),
            thresholds={k: v.model_dump() for k, v in m.thresholds.items()},
        )
        gates += [f"metric {name} vs {m.alias}" for name in m.thresholds] or [
            f"model trains and registers ({m.registered_model})"
        ]
    if config.smoke:
        gates.append(
            f"smoke: {config.smoke.requests} requests, p95 <= {config.smoke.p95_ms:g} ms"
            f" (emulated {config.smoke.p95_ms_emulated:g} ms)"
        )
    if config.emulation.budget_seconds:
        gates.append(f"emulated time <= {config.emulation.budget_seconds:g} s")
    deploy = None
    if config.deploy:
        deploy = DeployTarget(
            remote=config.deploy.remote,
            branch=config.deploy.branch,
            manifests=list(config.deploy.manifests),
        )
    return Plan(
        project=config.project.name,
        image=config.project.image,
        runners=inventory,
        jobs=jobs,
        training=training,
        gates=gates,
        publish=PublishTarget(image=config.project.image, tags=list(config.publish.tags)),
        deploy=deploy,
        fallback=config.emulation.fallback,
        emulation_budget_seconds=config.emulation.budget_seconds,
    )


def runners_for(config: Config, engine: str | None, docker_host: str = "") -> list[RunnerInfo]:
    """The runners to discover: the configured ones (filtered by engine) or a default."""
    chosen = [r for r in config.runners if engine is None or r.engine == engine]
    if not chosen:
        return [default_runner(engine or "docker", docker_host)]
    infos = [
        RunnerInfo(
            name=r.name, engine=r.engine, host=r.host, capacity=r.capacity, declared=r.platform
        )
        for r in chosen
    ]
    names = {r.name for r in infos}
    if (
        all(r.engine == "dagger" and r.host for r in infos)
        and DEFAULT_RUNNER not in names
    ):
        # Dagger always has a default engine (the `dagger run` session or the one the CLI
        # provisions); hosted runners add native engines next to it, they don't replace it.
        infos.append(default_runner("dagger"))
    return infos
