"""`Ports`: everything a release handle needs from outside, with the real adapters as
defaults. Pass fakes here (and only here) to run a pipeline's real order in memory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ci.core.config import Config
from ci.core.plan import Plan
from ci.core.platforms import Platform
from ci.core.ports import (
    Clock,
    EngineFactory,
    GitPort,
    NotifyPort,
    RegistryPort,
    SmokePort,
    TrackingPort,
)
from ci.stages import real
from ci.stages.fanout import BeforeRelease
from ci.stages.prepare import build_plan, utc_now


class PlanPort(Protocol):
    """Discover the runners and place the platform jobs."""

    def __call__(self, config: Config, *, only: list[Platform] | None, engine: str | None,
                 environ: Mapping[str, str]) -> Plan: ...


# Given the hook a release build must await (the model), the per-spec engine factory.
EnginesPort = Callable[[BeforeRelease | None], EngineFactory]
RegistryFactory = Callable[[Config, Mapping[str, str]], RegistryPort]


@dataclass(frozen=True)
class Ports:
    """The outside world of one release. `engines=None` means the engine the run names
    (Docker through buildx, or Dagger sessions) on the planned runners."""

    plan: PlanPort = build_plan
    engines: EnginesPort | None = None
    registry: RegistryFactory = real.registry_for
    tracking: TrackingPort = field(default_factory=real.MlflowTracking)
    git: GitPort = field(default_factory=real.GitDeploy)
    smoke: SmokePort = real.docker_smoke
    notify: NotifyPort = real.cloudevents_notify
    clock: Clock = utc_now
