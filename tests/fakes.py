"""In-memory fakes at the release's port seam (like httpx.MockTransport).

Pass them in through `ci.pipelines.ports.Ports` to drive a pipeline's REAL order without
docker, MLflow, a registry server or git. Every fake appends what it was asked to do to one
shared `recorder` (a list of event strings), so a test can assert the global order:

    plan → train → materialize → job P → tests passed P → release P → smoke P →
    preflight → index → tag T... → deploy → promote → notify

`Fakes()` builds one of each sharing that recorder; tweak the fakes' attributes
(`fakes.engines.outcomes["linux/arm64"] = "tests fail"`, `fakes.git.refuse_deploy = True`)
before running the pipeline.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio

from ci.core import platforms
from ci.core.config import Config, ModelConfig, NotifyConfig, SmokeConfig
from ci.core.errors import CIError, DeployRefused, EngineError, RegistryError, TrackingError
from ci.core.gate import GateDecision
from ci.core.model import MaterializedModel, ModelStageResult, PromoteResult, TrainingResult
from ci.core.oci import (
    ATTESTATION_KEY,
    DIGEST_RE,
    INDEX_TYPES,
    OCI_MANIFEST,
    ImageRef,
    Manifest,
    digest_of,
    platform_str,
)
from ci.core.outcome import Delivery, DeployResult, NotifyReport
from ci.core.placement import error_result
from ci.core.plan import Placement, Plan, PlatformJob, RunnerInfo, make_plan
from ci.core.ports import Clock, Engine, EngineFactory, PlacementKind
from ci.core.results import FailureDetail, JobSpec, PlatformResult, SourceInfo, TestSummary
from ci.core.verdict import SmokeResult, Verdict
from ci.pipelines.ports import Ports
from ci.stages.fanout import BeforeRelease

Recorder = list[str]
Write = tuple[str, str, str]  # (op, repo, ref): ("put_manifest", "team/app", "latest")
Outcome = Literal["pass", "tests fail", "engine error"]

FIXED_NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
DEPLOY_COMMIT = "d" * 40


def fixed_clock(when: datetime = FIXED_NOW) -> Clock:
    """A clock that always says `when` (verdict and index timestamps become stable)."""
    return lambda: when


def _repo(image: str) -> str:
    return ImageRef.parse(image).repository


# ------------------------------------------------------------------------------ registry


class FakeRegistry:
    """RegistryPort in memory: manifests by (repo, digest), tags by (repo, tag).

    Engines push per-platform images with `add_image` (by digest: not a "write", no tag
    sees it); `writes` records every RegistryPort write (put_manifest, remove_tag) in
    order, so `writes == []` means nothing user-visible moved.
    """

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder: Recorder = recorder if recorder is not None else []
        self.manifests: dict[tuple[str, str], Manifest] = {}
        self.platform_of: dict[tuple[str, str], dict[str, str]] = {}
        self._tags: dict[tuple[str, str], str] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}  # put_blob: (repo, digest) → bytes
        self.writes: list[Write] = []
        self.pushed: list[tuple[str, str, str]] = []  # (repo, platform, digest)
        self.fail_tags: set[str] = set()  # put_manifest on these tags raises RegistryError
        self.on_tag: Callable[[str], None] | None = None  # hears each tag write before it lands
        self.closed = 0

    # -- the engine's side
    def add_image(self, repo: str, platform: str) -> str:
        """Store one platform's image manifest by digest (what a push by digest leaves)."""
        p = platforms.parse(platform)
        plat = {"os": p.os, "architecture": p.architecture}
        if p.variant:
            plat["variant"] = p.variant
        body = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest_of(json.dumps(plat).encode()), "size": 2},
            "layers": [], "annotations": {"push": str(len(self.pushed)), "platform": str(p)},
        }, sort_keys=True).encode()
        digest = digest_of(body)
        self.manifests[(repo, digest)] = Manifest(digest, OCI_MANIFEST, body)
        self.platform_of[(repo, digest)] = plat
        self.pushed.append((repo, str(p), digest))
        return digest

    # -- helpers for tests
    def factory(self, config: Config, environ: Mapping[str, str]) -> FakeRegistry:
        """A RegistryFactory (`Ports.registry`, `run_merge(registry=...)`) giving this one."""
        return self

    def tags(self, repo: str) -> dict[str, str]:
        """{tag: digest} of one repository."""
        return {t: d for (r, t), d in sorted(self._tags.items()) if r == repo}

    def index(self, repo: str, ref: str) -> dict[str, Any]:
        return self.get_manifest(repo, ref).data

    # -- RegistryPort
    def descriptor(self, repo: str, digest: str) -> dict[str, Any]:
        found = self.manifests.get((repo, digest))
        plat = self.platform_of.get((repo, digest))
        if found is None or plat is None:
            raise RegistryError(f"{repo}@{digest}: manifest unknown")
        return {"mediaType": found.media_type, "digest": digest, "size": len(found.body),
                "platform": dict(plat)}

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        digest = self.resolve(repo, ref)
        if digest is None:
            raise RegistryError(f"{repo}:{ref}: manifest unknown")
        return self.manifests[(repo, digest)]

    def resolve(self, repo: str, ref: str) -> str | None:
        if DIGEST_RE.match(ref):
            return ref if (repo, ref) in self.manifests else None
        return self._tags.get((repo, ref))

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        digest = digest_of(body)
        by_digest = DIGEST_RE.match(ref) is not None
        if by_digest and ref != digest:
            raise RegistryError(f"{repo}@{ref}: digest does not match the body ({digest})")
        if ref in self.fail_tags:
            raise RegistryError(f"{repo}:{ref}: 500 internal server error")
        if not by_digest and self.on_tag is not None:
            self.on_tag(ref)
        self.writes.append(("put_manifest", repo, ref))
        self.manifests[(repo, digest)] = Manifest(digest, media_type, body)
        if by_digest:
            self.recorder.append("index" if media_type in INDEX_TYPES else f"manifest {ref}")
        else:
            self._tags[(repo, ref)] = digest
            self.recorder.append(f"tag {ref}")
        return digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        if (repo, digest) not in self.blobs:
            raise RegistryError(f"{repo}@{digest}: blob unknown")
        return self.blobs[(repo, digest)]

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[(repo, digest)] = data
        return digest

    def remove_tag(self, repo: str, tag: str) -> None:
        if (repo, tag) not in self._tags:
            raise RegistryError(f"{repo}:{tag}: tag unknown")
        self.writes.append(("remove_tag", repo, tag))
        del self._tags[(repo, tag)]
        self.recorder.append(f"untag {tag}")

    def index_platforms(self, repo: str, ref: str) -> list[str]:
        entries = self.get_manifest(repo, ref).data.get("manifests", [])
        return [platform_str(e.get("platform", {})) for e in entries
                if ATTESTATION_KEY not in e.get("annotations", {})]

    def close(self) -> None:
        self.closed += 1


# ------------------------------------------------------------------------------- engines


class FakeEngines:
    """EnginesPort: given the release hook, a factory of engines that play `outcomes`.

    "pass": tests pass, the hook is awaited, the image is pushed by digest into the
    registry; "tests fail": a failed result (step "test"); "engine error": the engine
    raises EngineError (fan-out turns it into an error result, as for a real engine).
    """

    name = "fake"

    def __init__(self, registry: FakeRegistry, outcomes: Mapping[str, Outcome] | None = None,
                 *, recorder: Recorder | None = None) -> None:
        self.registry = registry
        self.outcomes: dict[str, Outcome] = dict(outcomes or {})
        self.emulated_seconds: dict[str, float] = {}  # reported by each platform's result
        self.recorder: Recorder = recorder if recorder is not None else registry.recorder
        self.released: dict[str, JobSpec] = {}  # the spec each release build used
        self.hooks: list[BeforeRelease | None] = []

    def __call__(self, before_release: BeforeRelease | None) -> EngineFactory:
        self.hooks.append(before_release)

        def make(spec: JobSpec) -> Engine:
            return FakeEngine(self, before_release)

        return make


class FakeEngine:
    """One platform job, like DockerEngine.run_job: test, await the hook, build, push."""

    name = "fake"

    def __init__(self, owner: FakeEngines, before_release: BeforeRelease | None) -> None:
        self.owner = owner
        self.before_release = before_release

    def _result(self, spec: JobSpec, **kw: Any) -> PlatformResult:
        return PlatformResult(
            project=spec.project, image=spec.image, platform=spec.platform,
            runner=spec.placement.runner or "local", engine=self.name,
            placement=spec.placement.kind, placement_reason=spec.placement.reason,
            source=spec.source, run_id=spec.run_id, **kw)

    async def run_job(self, spec: JobSpec) -> PlatformResult:
        p, rec = spec.platform, self.owner.recorder
        outcome = self.owner.outcomes.get(p, "pass")
        rec.append(f"job {p}")
        if outcome == "engine error":
            raise EngineError(f"buildx exploded on {p}")
        await anyio.sleep(0)  # let the other jobs and the model stage interleave
        if outcome == "tests fail":
            rec.append(f"tests failed {p}")
            return self._result(
                spec, status="failed", tests=TestSummary(total=3, passed=2, failed=1),
                durations={"build_test": 1.0, "test": 2.0},
                failure=FailureDetail(step="test", message=f"tests failed on {p} (1 failed, "
                                      "0 errors of 3)", exit_code=1))
        rec.append(f"tests passed {p}")
        if self.before_release is not None:
            try:
                spec = await self.before_release(spec)
            except CIError as exc:
                rec.append(f"skipped release {p}")
                return error_result(spec, exc, self.name)
        rec.append(f"release {p}")
        self.owner.released[p] = spec
        digest = self.owner.registry.add_image(_repo(spec.image), p)
        emulated = 6.0 if spec.placement.kind == "emulated" else 0.0
        return self._result(
            spec, status="passed", digest=digest, tests=TestSummary(total=3, passed=3),
            durations={"build_test": 1.0, "test": 2.0, "build_release": 3.0, "push": 0.5},
            emulated_seconds=self.owner.emulated_seconds.get(p, emulated))


# ------------------------------------------------------------------------------ tracking


class FakeTracking:
    """TrackingPort: a gate that passes or rejects; `down` names methods raising
    TrackingError (MLflow unreachable); `calls` lists the methods called, in order."""

    def __init__(self, recorder: Recorder | None = None, *, gate_passes: bool = True,
                 down: Collection[str] = (), version: str = "7") -> None:
        self.recorder: Recorder = recorder if recorder is not None else []
        self.gate_passes = gate_passes
        self.down: set[str] = set(down)
        self.version = version
        self.calls: list[str] = []
        self.promoted: list[tuple[str, str]] = []  # (version, deploy commit)
        self.retrain: list[str] = []  # the `retrain` flag of each train_and_gate call

    def _call(self, method: str, event: str) -> None:
        self.calls.append(method)
        self.recorder.append(event)
        if method in self.down:
            raise TrackingError(f"MLflow at http://mlflow.invalid does not answer ({method})")

    @staticmethod
    def _model(config: Config) -> ModelConfig:
        if config.model is None:
            raise AssertionError("the tracking port was called for a config without [model]")
        return config.model

    def train_and_gate(self, config: Config, source: SourceInfo, run_id: str, *,
                       environ: Mapping[str, str], retrain: str = "") -> ModelStageResult:
        self._call("train_and_gate", "train")
        self.retrain.append(retrain)
        m = self._model(config)
        ok = self.gate_passes
        metrics = {"accuracy": 0.93 if ok else 0.71}
        decision = GateDecision(
            passed=ok, candidate_run_id="0123456789abcdef", alias=m.alias,
            champion_version="6", compared_with_champion=True, metrics=metrics,
            baseline={"accuracy": 0.9}, deltas={"accuracy": metrics["accuracy"] - 0.9},
            reasons=[] if ok else ["Metric accuracy value threshold check failed: 0.71 < 0.85"])
        return ModelStageResult(
            registered_model=m.registered_model, alias=m.alias,
            tracking_uri="http://mlflow.invalid",
            training=TrainingResult(run_id="0123456789abcdef", experiment_id="1",
                                    input_hash="h" * 64, reused=False, metrics=metrics),
            decision=decision, version=self.version if ok else None,
            model_uri=f"models:/{m.registered_model}/{self.version}" if ok else None,
            new_version=ok)

    def materialize(self, config: Config, version: str, *,
                    environ: Mapping[str, str]) -> MaterializedModel:
        self._call("materialize", "materialize")
        m = self._model(config)
        return MaterializedModel(
            directory=str(config.root_path / "model"), name=m.registered_model,
            version=version, uri=f"models:/{m.registered_model}/{version}",
            run_id="0123456789abcdef", sha256="0" * 64)

    def promote(self, config: Config, version: str, deploy_commit: str, *,
                environ: Mapping[str, str]) -> PromoteResult:
        self._call("promote", "promote")
        m = self._model(config)
        self.promoted.append((version, deploy_commit))
        return PromoteResult(registered_model=m.registered_model, alias=m.alias,
                             version=version, previous_version="6",
                             deploy_commit=deploy_commit, changed=True)


# ----------------------------------------------------------------------------------- git


class FakeGit:
    """GitPort: records init_remote and each deploy; can refuse the preflight (dry run) or
    the real deploy with DeployRefused; `land=False` makes a deploy with no commit."""

    def __init__(self, recorder: Recorder | None = None, *, refuse_preflight: bool = False,
                 refuse_deploy: bool = False, land: bool = True) -> None:
        self.recorder: Recorder = recorder if recorder is not None else []
        self.refuse_preflight = refuse_preflight
        self.refuse_deploy = refuse_deploy
        self.land = land
        self.error: CIError | None = None  # raised by the next real deploy (then cleared)
        self.calls: list[str] = []  # "init_remote", "deploy dry_run=True", ...
        self.index_refs: list[str] = []  # what each accepted REAL deploy pinned

    @property
    def real_deploys(self) -> list[str]:
        return [c for c in self.calls if c == "deploy dry_run=False"]

    def init_remote(self, config: Config) -> bool:
        self.calls.append("init_remote")
        return False

    def deploy(self, config: Config, source: SourceInfo, index_ref: str,
               model_version: str | None, *, dry_run: bool, source_repo: Path | None,
               environ: Mapping[str, str]) -> DeployResult:
        self.calls.append(f"deploy dry_run={dry_run}")
        self.recorder.append("preflight" if dry_run else "deploy")
        if self.refuse_preflight if dry_run else self.refuse_deploy:
            raise DeployRefused("deploy branch already holds a newer source commit: refusing")
        if config.deploy is None:
            raise AssertionError("the git port was called for a config without [deploy]")
        if not dry_run and self.error is not None:
            error, self.error = self.error, None
            raise error
        if not dry_run:
            self.index_refs.append(index_ref)
        landed = self.land and not dry_run
        return DeployResult(
            commit=DEPLOY_COMMIT if landed else "", branch=config.deploy.branch,
            remote=config.deploy.remote, changed_files=tuple(config.deploy.manifests),
            changes=(), diff="", attempts=1, dry_run=dry_run, pushed=landed, sequence=1)

    def source_repo(self, root: Path) -> Path | None:
        return None


# ---------------------------------------------------------------------- smoke and notify


class FakeSmoke:
    """SmokePort: passes all but `failing`; thread-safe (smoke runs in parallel threads).
    `on_call(platform)` runs inside each call (a barrier); `in_flight_max`: most at once."""

    def __init__(self, recorder: Recorder | None = None, *, failing: Collection[str] = (),
                 on_call: Callable[[str], None] | None = None) -> None:
        self.recorder: Recorder = recorder if recorder is not None else []
        self.failing: set[str] = set(failing)
        self.on_call = on_call
        self.calls: list[str] = []  # platforms, in the order their smoke calls began
        self.in_flight_max = self._in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, *, platform: str, placement: PlacementKind, reference: str,
                 config: SmokeConfig, host: str, environ: Mapping[str, str]) -> SmokeResult:
        with self._lock:
            self.recorder.append(f"smoke {platform}")
            self.calls.append(platform)
            self._in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self._in_flight)
        try:
            if self.on_call is not None:
                self.on_call(platform)
        finally:
            with self._lock:
                self._in_flight -= 1
        ok = platform not in self.failing
        return SmokeResult(
            platform=platform, placement=placement, reference=reference,
            requests=config.requests, errors=0 if ok else config.requests,
            error_rate=0.0 if ok else 1.0, p50_ms=2.0, p95_ms=3.0,
            bound_ms=config.p95_ms_emulated if placement == "emulated" else config.p95_ms,
            max_error_rate=config.max_error_rate, passed=ok,
            reason="" if ok else "every /predict answered 500")


@dataclass(frozen=True)
class Notified:
    """What one notify call was given."""

    verdict: Verdict
    outcome: str | None
    error: str
    index_digest: str | None
    tags: tuple[str, ...]
    deploy_commit: str | None
    promoted_version: str | None


class FakeNotify:
    """NotifyPort: records every call and reports each webhook delivered."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder: Recorder = recorder if recorder is not None else []
        self.calls: list[Notified] = []

    def __call__(self, verdict: Verdict, config: NotifyConfig, *, outcome: str | None,
                 index_digest: str | None, tags: Sequence[str], deploy_commit: str | None,
                 promoted_version: str | None, error: str) -> NotifyReport:
        self.recorder.append("notify")
        self.calls.append(Notified(verdict, outcome, error, index_digest, tuple(tags),
                                   deploy_commit, promoted_version))
        kind = "passed" if verdict.passed and not error else "failed"
        return NotifyReport(
            event_id=f"evt-{len(self.calls)}", event_type=f"dev.maci.release.{kind}",
            deliveries=[Delivery(webhook=w, delivered=True, status=202, attempts=1)
                        for w in config.webhooks])


# ---------------------------------------------------------------------------------- plan


class FakePlan:
    """PlanPort: every platform on one runner "local", natively (or emulated if listed)."""

    def __init__(self, recorder: Recorder | None = None, *,
                 emulated: Collection[str] = ()) -> None:
        self.recorder: Recorder = recorder if recorder is not None else []
        self.emulated: set[str] = set(emulated)

    def __call__(self, config: Config, *, only: list[platforms.Platform] | None,
                 engine: str | None, environ: Mapping[str, str]) -> Plan:
        self.recorder.append("plan")
        wanted = [str(p) for p in (only or config.platforms)]
        runner = RunnerInfo(name="local", engine="docker", reachable=True, native=wanted[0],
                            emulates=wanted[1:], capacity=len(wanted))
        jobs = [PlatformJob(platform=p, placement=Placement(
            kind="emulated" if p in self.emulated else "native", runner="local",
            engine="docker", reason="fake runner 'local'")) for p in wanted]
        return make_plan(config, [runner], only=only).model_copy(update={"jobs": jobs})


# ---------------------------------------------------------------------------- the bundle


@dataclass
class Fakes:
    """One fake per port, all appending to the same `recorder`."""

    recorder: Recorder = field(default_factory=list)
    registry: FakeRegistry = field(init=False)
    engines: FakeEngines = field(init=False)
    tracking: FakeTracking = field(init=False)
    git: FakeGit = field(init=False)
    smoke: FakeSmoke = field(init=False)
    notify: FakeNotify = field(init=False)
    plan: FakePlan = field(init=False)
    clock: Clock = field(default_factory=fixed_clock)

    def __post_init__(self) -> None:
        self.registry = FakeRegistry(self.recorder)
        self.engines = FakeEngines(self.registry, recorder=self.recorder)
        self.tracking = FakeTracking(self.recorder)
        self.git = FakeGit(self.recorder)
        self.smoke = FakeSmoke(self.recorder)
        self.notify = FakeNotify(self.recorder)
        self.plan = FakePlan(self.recorder)

    def ports(self) -> Ports:
        return Ports(plan=self.plan, engines=self.engines, registry=self.registry.factory,
                     tracking=self.tracking, git=self.git, smoke=self.smoke,
                     notify=self.notify, clock=self.clock)

    @property
    def moved(self) -> bool:
        """True once anything user-visible changed: a registry write, a real deploy, the alias."""
        return bool(self.registry.writes or self.git.real_deploys or self.tracking.promoted)
