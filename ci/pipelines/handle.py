"""The release handle a pipeline drives: one method per stage, each recording its result.

A pipeline (the built-in `ci.pipelines.release` or a project's own `pipelines/NAME.py`)
decides the ORDER; this handle gives it stages that take their ports (engines, registry,
tracking, git, smoke, notify, clock) from `Ports`, so a test can drive the real order with
in-memory fakes. Nothing user-visible moves without the Permit of a passed verdict:
`publish` asks the verdict for it, and only `decide()` puts one there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ci.core.config import Config
from ci.core.critical_path import WAIT_FOR_MODEL
from ci.core.errors import CIError, PipelineError, StepFailed
from ci.core.jobs import with_model
from ci.core.model import ModelStageResult
from ci.core.outcome import ReleaseOutcome
from ci.core.platforms import Platform
from ci.core.ports import EngineFactory, Progress
from ci.core.results import JobSpec, PlatformResult
from ci.core.verdict import (
    MODEL_STEP,
    GateCheck,
    ModelVerdict,
    SmokeResult,
    Verdict,
    decide,
    model_verdict_of,
)
from ci.pipelines.ending import ReleaseEnd
from ci.pipelines.ports import Ports
from ci.pipelines.stage import job_detail
from ci.stages.fanout import BeforeRelease
from ci.stages.prepare import Prepared, prepare, rfc3339
from ci.stages.record import ReleaseRecord
from ci.stages.smoke import unsupported_reason
from ci.stages.smoke_fanout import SmokeFanout


@dataclass
class Release(ReleaseEnd):
    """One release in progress; a pipeline calls its stages in order.

    Every field below the options is written by exactly one stage, and read back by later
    ones through typed properties; nothing is `Any`.
    """

    config: Config
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    engine: str = "docker"
    only: list[Platform] | None = None
    dry_run: bool = False
    force: bool = False
    progress: Progress | None = None
    ports: Ports = field(default_factory=Ports)
    pipeline: str = "release"
    # ---- written by the stages
    prepared: Prepared | None = None
    fingerprint: str = ""
    up_to_date: ReleaseRecord | None = None
    model: ModelStageResult | None = None
    model_error: str = ""
    results: list[PlatformResult] = field(default_factory=list)
    skipped_reason: str = ""
    smoke_results: list[SmokeResult] = field(default_factory=list)
    smoke_unsupported: str = ""  # why a configured smoke gate cannot run on this engine
    gates: list[GateCheck] = field(default_factory=list)
    verdict: Verdict | None = None
    outcome_value: ReleaseOutcome = field(default_factory=ReleaseOutcome)
    failure: str = ""
    smoke_fanout: SmokeFanout | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ helpers
    def plan(self) -> Prepared:
        """Plan and one spec per platform; an unavailable platform stops here (exit 1)."""
        if self.engine == "dagger":
            from ci.adapters.engines.dagger_session import check_reachable

            check_reachable(self.environ)
        self.resume_unfinished()  # a release an earlier run left half done comes first
        with self._stage("release", "plan") as note:
            plan = self.ports.plan(self.config, only=self.only, engine=self.engine,
                                   environ=self.environ)
            self.prepared = prepare(self.config, only=self.only, engine=self.engine,
                                    environ=self.environ, clock=self.clock, plan=plan)
            note.detail = f"run {self.prepared.run_id}"
            for job in self.prepared.plan.jobs:
                if self.progress:
                    self.progress.lane(job.platform, job.placement.kind)
        return self.prepared

    def check_up_to_date(self) -> bool:
        """True when the last release came from these exact inputs and is still in place."""
        prepared = self._need("check_up_to_date()")
        if self.dry_run:
            return False
        from ci.stages import record

        with self._stage("release", "up-to-date check") as note:
            client = self.ports.registry(self.config, self.environ)
            try:
                self.fingerprint, self.up_to_date, note.detail = record.check(
                    self.config, prepared.source, prepared.expected, self.engine,
                    force=self.force, environ=self.environ, client=client)
            finally:
                client.close()
        return self.up_to_date is not None

    def model_stage(self) -> None:
        """Train (or reuse), gate vs the alias, register; then bake the version into specs.

        MLflow failures fail closed: the verdict gets the reason and nothing is published.
        """
        args = self._train_gate_materialize()
        if args is not None and self.prepared is not None:
            self.prepared = self.prepared.with_model(args)

    def _train_gate_materialize(self) -> dict[str, str] | None:
        """The model stage's work; returns the MODEL_* build args, or None (no/failed model)."""
        prepared = self._need("model_stage()")
        if self.config.model is None:
            return None
        try:
            with self._stage("model", "train+gate") as note:
                self.model = self.ports.tracking.train_and_gate(
                    self.config, prepared.source, prepared.run_id, environ=self.environ,
                    retrain="--force" if self.force else "")
                t, d = self.model.training, self.model.decision
                note.ok = d.passed
                note.detail = f"{t.reason or t.run_id[:8]}: gate {'passed' if d.passed else 'REJECTED'}"
            if not self.model.passed or self.model.version is None:
                return None
            with self._stage("model", "materialize") as note:
                found = self.ports.tracking.materialize(self.config, self.model.version,
                                                        environ=self.environ)
                note.detail = f"version {found.version}"
        except CIError as exc:
            self.model_error = f"model stage: {exc.message}"
            return None
        return found.build_args()

    def model_and_platform_jobs(self) -> list[PlatformResult]:
        """The model stage beside the platform jobs: each job builds and runs its tests while
        training runs, and its release build (which embeds the registered model) waits for
        the model. A rejected model stops the jobs before any release build or push.

        Docker engine only: Dagger children cannot wait on this process, so there the model
        stage runs first.
        """
        self._need("model_and_platform_jobs()")
        if self.engine != "docker" or self.config.model is None:
            self.model_stage()
            return self.platform_jobs()
        return anyio.run(self._concurrent)

    async def _concurrent(self) -> list[PlatformResult]:
        ready = anyio.Event()
        args: dict[str, str] = {}

        async def model_task() -> None:
            try:
                found = await anyio.to_thread.run_sync(self._train_gate_materialize,
                                                       abandon_on_cancel=True)
                args.update(found or {})
            finally:
                ready.set()

        async def before_release(spec: JobSpec) -> JobSpec:
            if ready.is_set() or self.progress is None:
                await ready.wait()
            else:  # idle time, a span of its own: the critical path goes through the model
                self.progress.stage_started(spec.platform, WAIT_FOR_MODEL)
                try:
                    await ready.wait()
                finally:
                    self.progress.stage_finished(spec.platform, WAIT_FOR_MODEL, True)
            if self.model_blocks:
                raise StepFailed(f"release build skipped: {self.model_blocks}", step=MODEL_STEP)
            return with_model([spec], args)[0]  # MODEL_* build args and the model labels

        async with anyio.create_task_group() as tg:
            tg.start_soon(model_task)
            self.results = await self._docker_jobs(before_release)
        if self.model_blocks:
            self.skipped_reason = f"release builds skipped: {self.model_blocks}"
        return self.results

    def _factory(self, before_release: BeforeRelease | None = None) -> EngineFactory | None:
        return self.ports.engines(before_release) if self.ports.engines else None

    async def _docker_jobs(self, before_release: BeforeRelease | None = None
                           ) -> list[PlatformResult]:
        from ci.stages.fanout import execute_async

        prepared = self._need("platform_jobs()")
        for spec in prepared.specs:
            if self.progress:
                self.progress.stage_started(spec.platform, "test+build+push",
                                            spec.placement.runner or "", spec.placement.kind)
        async with self._smokes().running():  # each passed job's smoke starts on its result
            return await execute_async(
                prepared, self.config, push=True, environ=self.environ,
                on_result=self._job_done, before_release=before_release,
                factory=self._factory(before_release),
            )

    def _job_done(self, result: PlatformResult) -> None:
        if self.progress:
            self.progress.stage_finished(result.platform, "test+build+push", result.ok,
                                         job_detail(result))
        if self._smoke_mode() == "port":
            self._smokes().submit(result)

    def model_verdict(self) -> ModelVerdict | None:
        return None if self.model is None else model_verdict_of(self.model)

    @property
    def model_blocks(self) -> str:
        """Why platform jobs are pointless (the release can no longer pass), or ''."""
        if self.model_error:
            return self.model_error
        if self.model is not None and not self.model.passed:
            return "model gate failed"
        return ""

    def platform_jobs(self) -> list[PlatformResult]:
        """All platform jobs concurrently on their runners; results are data, not errors."""
        prepared = self._need("platform_jobs()")
        if self.model_blocks:
            self.skipped_reason = f"platform jobs skipped: {self.model_blocks}"
            return []
        if self.engine == "dagger" and self.ports.engines is None:
            for spec in prepared.specs:
                if self.progress:
                    self.progress.stage_started(spec.platform, "test+build+push",
                                                spec.placement.runner or "",
                                                spec.placement.kind)
            self.results = self._dagger_jobs(prepared)
        else:
            self.results = anyio.run(self._docker_jobs)
        return self.results

    def _dagger_jobs(self, prepared: Prepared) -> list[PlatformResult]:
        from ci.stages.fanout import execute_dagger

        results = execute_dagger(prepared, self.config, self.environ)
        for r in results:
            self._job_done(r)
        return results

    def smoke(self) -> list[SmokeResult]:
        """Every passed platform's image load-tested by digest, in platform order. On Docker
        each started when its job pushed it (in parallel, bounded per runner); one that did
        not get one runs now. Under Dagger the session that built it did, in its result."""
        mode = self._smoke_mode()
        if mode == "off":
            return []
        self._need("smoke()")
        if mode == "unsupported":
            self.smoke_unsupported = unsupported_reason(self.engine)  # never a silent skip
            return []
        if mode == "in job":
            self.smoke_results = [self._smoke_reported(r, lambda done: done.smoke)
                                  for r in self.results
                                  if r.ok and r.reference is not None and r.smoke is not None]
            return self.smoke_results  # a passed platform without one: "did not run"
        fanout = self._smokes()
        anyio.run(fanout.run_missing, self.results)
        self.smoke_results = fanout.collect(self.results)
        return self.smoke_results

    def _smoke_mode(self) -> str:
        """off (no [smoke]), in job (Dagger), unsupported (engine), or port (SmokePort)."""
        if self.config.smoke is None:
            return "off"
        if self.ports.engines is None and self.engine == "dagger":
            return "in job"
        if self.ports.engines is None and self.engine != "docker":
            return "unsupported"
        return "port"

    def _smokes(self) -> SmokeFanout:
        """This run's smoke scheduler: per-runner capacity from the plan, like the jobs."""
        if self.smoke_fanout is None:
            prepared = self._need("smoke()")
            self.smoke_fanout = SmokeFanout(
                lambda r: self._smoke_reported(r, self._smoke_port),
                runner_of={s.platform: s.placement.runner or "-" for s in prepared.specs},
                capacity={r.name: r.capacity for r in prepared.plan.runners})
        return self.smoke_fanout

    def _smoke_port(self, r: PlatformResult) -> SmokeResult:
        prepared, config = self._need("smoke()"), self.config.smoke
        if config is None or r.reference is None:
            raise PipelineError(f"{self.pipeline}: smoke of {r.platform} without [smoke] or image")
        hosts = {s.platform: s.placement.host for s in prepared.specs}
        return self.ports.smoke(platform=r.platform, placement=r.placement,
                                reference=r.reference, config=config,
                                host=hosts.get(r.platform, ""), environ=self.environ)

    def _smoke_reported(self, r: PlatformResult,
                        run: Callable[[PlatformResult], SmokeResult | None]) -> SmokeResult:
        """One platform's smoke as a stage of its lane (start, finish, p95 and errors)."""
        with self._stage(r.platform, "smoke", placement=r.placement) as note:
            s = run(r)
            if s is None:
                raise PipelineError(f"{self.pipeline}: no smoke result for {r.platform}")
            note.ok = s.passed
            note.detail = (f"p95 {s.p95_ms:.0f} ms (bound {s.bound_ms:g}), errors "
                           f"{s.errors}/{s.requests}" + (f": {s.reason}" if s.reason else ""))
        return s

    def add_gate(self, name: str, passed: bool, reason: str = "") -> GateCheck:
        """A pipeline's own gate: weighed by `decide()`; a failed one names itself in the
        verdict (`NAME: reason`) and blocks the publish like any other gate."""
        if self.verdict is not None:
            raise PipelineError(f"{self.pipeline}: add_gate({name!r}) after decide(): the "
                                "verdict is already made")
        check = GateCheck(name=name, passed=passed, reason=reason)
        self.gates.append(check)
        return check

    def decide(self, *, require_model: bool | None = None,
               require_smoke: bool | None = None) -> Verdict:
        """One verdict from every gate; written to the state dir before anything moves.

        `require_model=False` makes an image-only verdict (no model gate even when the
        config has a [model]); smoke is required when [smoke] is configured.
        """
        prepared = self._need("decide()")
        model_required = self.config.model is not None if require_model is None \
            else require_model
        smoke_required = self.config.smoke is not None if require_smoke is None \
            else require_smoke
        self.verdict = decide(
            run_id=prepared.run_id, project=self.config.project.name,
            image=self.config.project.image, created=rfc3339(self.clock()),
            source=prepared.source, expected_platforms=prepared.expected,
            platforms=self.results, model=self.model_verdict(),
            model_required=model_required, smoke=self.smoke_results,
            smoke_required=smoke_required and not self.smoke_unsupported,
            emulation_budget_seconds=self.config.emulation.budget_seconds,
            stage_error=self.model_error, gates=[*self.gates, *self._engine_gates()],
            extra_reasons=[self.skipped_reason] if self.skipped_reason else [],
        )
        self.write_verdict()
        return self.verdict

    def _engine_gates(self) -> list[GateCheck]:
        if not self.smoke_unsupported:
            return []
        return [GateCheck(name="smoke", passed=False, reason=self.smoke_unsupported)]

    def write_verdict(self) -> Path:
        """verdict.json in the run's folder and the state dir (secrets masked)."""
        if self.verdict is None:
            raise PipelineError(f"{self.pipeline}: write_verdict() needs decide() first")
        from ci.stages.record import write_verdict

        return write_verdict(self.config, self.run_dir, self.verdict)

    def outcome(self) -> dict[str, Any]:
        """The machine-readable result of the run (`ci run --json`)."""
        if self.up_to_date is not None:
            return {"run_id": self.run_id, "passed": True, "up_to_date": True,
                    "release": self.up_to_date.model_dump(mode="json")}
        o = self.outcome_value
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "up_to_date": False,
            "passed": bool(self.verdict and self.verdict.passed and not self.failure),
            "failure": self.failure,
            "verdict": self.verdict.model_dump(mode="json") if self.verdict else None,
            **o.to_json(),
        }
