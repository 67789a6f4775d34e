"""The release handle a pipeline drives: one method per stage, each recording its result.

A pipeline (the built-in `ci.pipelines.release` or a project's own `pipelines/NAME.py`)
decides the ORDER; this handle gives it stages that take their ports (engines, registry,
tracking, git, smoke, notify, clock) from `Ports`, so a test can drive the real order with
in-memory fakes. Nothing user-visible moves without the Permit of a passed verdict:
`publish` asks the verdict for it, and only `decide()` puts one there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ci.core.config import Config
from ci.core.errors import CIError, GateFailed, PipelineError, StepFailed
from ci.core.jobs import with_model
from ci.core.model import ModelStageResult
from ci.core.outcome import ReleaseOutcome
from ci.core.platforms import Platform
from ci.core.ports import Clock, EngineFactory, Progress
from ci.core.results import JobSpec, PlatformResult
from ci.core.verdict import (
    MODEL_STEP,
    GateCheck,
    ModelVerdict,
    Permit,
    SmokeResult,
    Verdict,
    decide,
    model_verdict_of,
)
from ci.pipelines.ports import Ports
from ci.pipelines.stage import Note, job_detail, reported
from ci.stages.fanout import BeforeRelease
from ci.stages.prepare import Prepared, prepare, rfc3339
from ci.stages.record import ReleaseRecord
from ci.stages.smoke import unsupported_reason


@dataclass
class Release:
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

    # ------------------------------------------------------------------ helpers
    def _stage(self, lane: str, stage: str, detail: str = "",
               placement: str = "") -> AbstractContextManager[Note]:
        return reported(self.progress, lane, stage, detail, placement)

    def _need(self, what: str) -> Prepared:
        if self.prepared is None:
            raise PipelineError(f"{self.pipeline}: {what} needs plan() first")
        return self.prepared

    @property
    def clock(self) -> Clock:
        return self.ports.clock

    @property
    def run_id(self) -> str:
        return self.prepared.run_id if self.prepared else ""

    @property
    def run_dir(self) -> Path:
        return self._need("the run directory").output_dir

    @property
    def expected(self) -> list[str]:
        return self._need("the expected platforms").expected

    # ------------------------------------------------------------------ stages
    def plan(self) -> Prepared:
        """Plan and one spec per platform; an unavailable platform stops here (exit 1)."""
        if self.engine == "dagger":
            from ci.adapters.engines.dagger_session import check_reachable

            check_reachable(self.environ)
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

    def record_release(self) -> None:
        """Remember what this release published, for the next run's up-to-date check."""
        published, deployed = self.outcome_value.published, self.outcome_value.deployed
        if published is None or self.dry_run or not self.fingerprint:
            return
        from ci.stages import record

        record.save(self.config, ReleaseRecord(
            fingerprint=self.fingerprint, run_id=self.run_id, image=self.config.project.image,
            index_digest=published.digest, tags=list(published.tags),
            platforms=list(published.platforms),
            deploy_commit=deployed.commit if deployed else None,
            deploy_branch=deployed.branch if deployed else None,
            model_version=self.model_version,
        ))

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
            await ready.wait()
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
        return await execute_async(
            prepared, self.config, push=True, environ=self.environ, on_result=self._job_done,
            before_release=before_release, factory=self._factory(before_release),
        )

    def _job_done(self, result: PlatformResult) -> None:
        if self.progress:
            self.progress.stage_finished(result.platform, "test+build+push", result.ok,
                                         job_detail(result))

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
        """Load-test each passed platform's image by digest, one at a time (latencies not
        skewed by each other); under Dagger the session that built it did, in its result."""
        if self.config.smoke is None:
            return []
        prepared = self._need("smoke()")
        in_job = self.engine == "dagger" and self.ports.engines is None
        if self.engine not in ("docker", "dagger") and self.ports.engines is None:
            self.smoke_unsupported = unsupported_reason(self.engine)  # never a silent skip
            return []
        hosts = {s.platform: s.placement.host for s in prepared.specs}
        for r in self.results:
            if not r.ok or r.reference is None or (in_job and r.smoke is None):
                continue  # a passed platform without one: "smoke test did not run"
            with self._stage(r.platform, "smoke", placement=r.placement) as note:
                s = r.smoke if in_job and r.smoke else self.ports.smoke(
                    platform=r.platform, placement=r.placement, reference=r.reference,
                    config=self.config.smoke, host=hosts.get(r.platform, ""),
                    environ=self.environ)
                self.smoke_results.append(s)
                note.ok = s.passed
                note.detail = (f"p95 {s.p95_ms:.0f} ms (bound {s.bound_ms:g}), errors "
                               f"{s.errors}/{s.requests}" + (f": {s.reason}" if s.reason else ""))
        return self.smoke_results

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

    def permit(self) -> Permit:
        """The passed verdict's Permit; GateFailed (nothing moved) for any other verdict."""
        if self.verdict is None:
            raise GateFailed("nothing published: no verdict yet (call decide() first)")
        return self.verdict.permit()

    def preflight_deploy(self) -> None:
        """Check the deploy would be accepted (guard, manifests) BEFORE any tag moves."""
        if self.config.deploy is None:
            return
        prepared = self._need("preflight_deploy()")
        self.permit()
        self.ports.git.init_remote(self.config)
        with self._stage("release", "deploy preflight"):
            probe = f"{self.config.project.image}@sha256:{'0' * 64}"
            self.ports.git.deploy(self.config, prepared.source, probe, self.model_version,
                                  dry_run=True, source_repo=self._source_repo(),
                                  environ=self.environ)

    def check_publishable(self) -> None:
        """A release holds every configured platform: `-p` may narrow a build or a verify
        run, never a publish (UsageError, exit 2, before any work when called after plan)."""
        from ci.stages.publish import check_publishable

        check_publishable(self.config, [str(p) for p in self.only] if self.only else None, True)

    def publish(self, *, tags: Sequence[str] | None = None) -> ReleaseOutcome:
        """Assemble the index from the verdict's digests and move every release tag together
        (`tags` replaces the configured ones). Raises GateFailed unless the verdict passed."""
        from ci.stages.publish import publish_release

        permit = self.permit()
        self.check_publishable()
        with self._stage("release", "publish") as note:
            client = self.ports.registry(self.config, self.environ)
            try:
                published = publish_release(permit, self.config, client, tags=tags,
                                            created=rfc3339(self.clock()), dry_run=self.dry_run)
            finally:
                client.close()
            self.outcome_value = self.outcome_value.with_(published=published)
            would = "dry run, would publish " if self.dry_run else ""
            note.detail = f"{would}{published.digest[:19]} tags {', '.join(published.tags)}"
        return self.outcome_value

    def deploy(self) -> ReleaseOutcome:
        """Pin the deploy manifests to the published index, commit, push (GitOps)."""
        published = self.outcome_value.published
        if self.config.deploy is None or published is None:
            return self.outcome_value
        prepared = self._need("deploy()")
        self.permit()
        with self._stage("release", "deploy") as note:
            deployed = self.ports.git.deploy(
                self.config, prepared.source, self._index_ref(), self.model_version,
                dry_run=self.dry_run, source_repo=self._source_repo(), environ=self.environ)
            self.outcome_value = self.outcome_value.with_(deployed=deployed)
            note.detail = "dry run" if deployed.dry_run else \
                f"{deployed.commit[:12]} after {deployed.attempts} push(es)"
        return self.outcome_value

    def promote(self) -> ReleaseOutcome:
        """Move the alias to the version the verdict weighed, only after that release was
        published and (with [deploy]) its deploy commit landed; never on a dry run."""
        if self.model is None or self.model_version is None or self.dry_run:
            return self.outcome_value
        weighed = self.permit().verdict.model
        version = weighed.candidate_version if weighed is not None else None
        if version is None or version != self.model_version:
            raise GateFailed(f"not promoting: model version {self.model_version} is not the "
                             "one the verdict weighed")
        published = self.outcome_value.published
        if published is None or published.dry_run:
            raise GateFailed("not promoting: nothing was published")
        deployed = self.outcome_value.deployed
        if self.config.deploy is not None and (deployed is None or not deployed.commit):
            raise GateFailed("not promoting: the deploy commit did not land")
        with self._stage("model", "promote") as note:
            promoted = self.ports.tracking.promote(
                self.config, version, deployed.commit if deployed else "", environ=self.environ)
            self.outcome_value = self.outcome_value.with_(promoted=promoted)
            note.detail = f"{promoted.alias} → v{version}"
        return self.outcome_value

    def notify(self, error: str = "") -> ReleaseOutcome:
        """CloudEvents to the webhooks; a failed delivery is reported, never raised."""
        if not self.config.notify.webhooks or self.verdict is None or self.dry_run:
            return self.outcome_value
        o = self.outcome_value
        report = self.ports.notify(
            self.verdict, self.config.notify, outcome="failed" if error else None,
            index_digest=o.published.digest if o.published else None,
            tags=o.published.tags if o.published else (),
            deploy_commit=o.deployed.commit if o.deployed else None,
            promoted_version=o.promoted.version if o.promoted else None, error=error)
        self.outcome_value = o.with_(notified=report)
        return self.outcome_value

    # ------------------------------------------------------------------ outputs
    @property
    def model_version(self) -> str | None:
        return self.model.version if self.model is not None else None

    def _index_ref(self) -> str:
        published = self.outcome_value.published
        if published is None:
            raise PipelineError(f"{self.pipeline}: deploy() needs publish() first")
        from ci.stages.deploy import index_ref

        return index_ref(self.config, published)

    def _source_repo(self) -> Path | None:
        return self.ports.git.source_repo(self.config.root_path)

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
