"""The release run: a thin handle over the stages a release pipeline orders.

`pipelines/release.py` decides the ORDER (the one place it lives); this module gives it
stages that each record their result as data: plan → model stage → platform jobs → smoke →
verdict → publish → deploy → promote → notify. Stages know ports (engines, registry,
tracking, git), never tool details; a stage that fails turns into a verdict reason or a
typed error, and nothing user-visible moves before the verdict passed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ci.commands import build as jobs_cmd
from ci.config import Config
from ci.errors import CIError, GateFailed, StepFailed
from ci.jobs import with_model
from ci.platforms import Platform
from ci.redact import redact
from ci.reports.summary import Progress
from ci.results import JobSpec, PlatformResult
from ci.verdict import MODEL_STEP, ModelVerdict, SmokeResult, Verdict, decide


@dataclass
class ReleaseRun:
    """Everything one release learned so far; the pipeline calls its stages in order."""

    config: Config
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    engine: str = "docker"
    only: list[Platform] | None = None
    dry_run: bool = False
    force: bool = False
    progress: Progress | None = None
    fingerprint: str = ""
    up_to_date: Any = None  # ci.release_record.ReleaseRecord when nothing needs doing
    prepared: jobs_cmd.Prepared | None = None
    model: Any = None  # ci.model_stage.ModelStageResult (imported lazily: mlflow is heavy)
    model_error: str = ""
    results: list[PlatformResult] = field(default_factory=list)
    skipped_reason: str = ""
    smoke_results: list[SmokeResult] = field(default_factory=list)
    verdict: Verdict | None = None
    published: Any = None  # ci.publish.PublishResult
    deployed: Any = None  # ci.gitops.DeployResult
    promoted: Any = None  # ci.model_stage.PromoteResult
    notified: Any = None  # ci.notify.NotifyReport
    failure: str = ""

    # ------------------------------------------------------------------ helpers
    def _started(self, lane: str, stage: str, detail: str = "", placement: str = "") -> None:
        if self.progress:
            self.progress.stage_started(lane, stage, detail, placement)

    def _finished(self, lane: str, stage: str, ok: bool, detail: str = "") -> None:
        if self.progress:
            self.progress.stage_finished(lane, stage, ok, redact(detail))

    @property
    def run_id(self) -> str:
        return self.prepared.run_id if self.prepared else ""

    @property
    def run_dir(self) -> Path:
        assert self.prepared is not None
        return self.prepared.output_dir

    # ------------------------------------------------------------------ stages
    def plan(self) -> jobs_cmd.Prepared:
        """Plan and one spec per platform; an unavailable platform stops here (exit 1)."""
        if self.engine == "dagger":
            from ci.engines.dagger_session import check_reachable

            check_reachable(self.environ)
        self._started("release", "plan")
        try:
            self.prepared = jobs_cmd.prepare(
                self.config, only=self.only, engine=self.engine, environ=self.environ
            )
        except CIError as exc:
            self._finished("release", "plan", False, exc.message)
            raise
        for job in self.prepared.plan.jobs:
            if self.progress:
                self.progress.lane(job.platform, job.placement.kind)
        self._finished("release", "plan", True, f"run {self.prepared.run_id}")
        return self.prepared

    def check_up_to_date(self) -> bool:
        """True when the last release came from these exact inputs and is still in place."""
        if self.prepared is None or self.dry_run:
            return False
        from ci import release_record

        self._started("release", "up-to-date check")
        self.fingerprint = release_record.fingerprint(
            self.config, self.prepared.source, [j.platform for j in self.prepared.plan.jobs],
            self.engine)
        record = release_record.load(self.config)
        why = "forced" if self.force else ""
        if not why:
            why = "no previous release" if record is None else (
                "inputs changed" if record.fingerprint != self.fingerprint else
                release_record.still_in_place(self.config, record, self.environ))
        if why or record is None:
            self._finished("release", "up-to-date check", True, f"release needed: {why}")
            return False
        self.up_to_date = record
        self._finished("release", "up-to-date check", True,
                       f"up to date: {record.index_digest[:19]} from run {record.run_id}")
        return True

    def record_release(self) -> None:
        """Remember what this release published, for the next run's up-to-date check."""
        if self.published is None or self.dry_run or not self.fingerprint:
            return
        from ci import release_record

        release_record.save(self.config, release_record.ReleaseRecord(
            fingerprint=self.fingerprint, run_id=self.run_id, image=self.config.project.image,
            index_digest=self.published.digest, tags=list(self.published.tags),
            platforms=list(self.published.platforms),
            deploy_commit=self.deployed.commit if self.deployed else None,
            deploy_branch=self.deployed.branch if self.deployed else None,
            model_version=self._model_version(),
        ))

    def model_stage(self) -> None:
        """Train (or reuse), gate vs the alias, register; then bake the version into specs.

        MLflow failures fail closed: the verdict gets the reason and nothing is published.
        """
        args = self._train_gate_materialize()
        if args is not None and self.prepared is not None:
            self.prepared = jobs_cmd.Prepared(
                self.prepared.plan, self.prepared.source, self.prepared.run_id,
                with_model(self.prepared.specs, args), self.prepared.output_dir,
            )

    def _train_gate_materialize(self) -> dict[str, str] | None:
        """The model stage's work; returns the MODEL_* build args, or None (no/failed model)."""
        if self.config.model is None or self.prepared is None:
            return None
        from ci import model_stage

        self._started("model", "train+gate")
        try:
            self.model = model_stage.train_and_gate(
                self.config, self.prepared.source, self.prepared.run_id, environ=self.environ
            )
        except CIError as exc:
            self.model_error = f"model stage: {exc.message}"
            self._finished("model", "train+gate", False, exc.message)
            return None
        d = self.model.decision
        detail = ("reused run " if self.model.training.reused else "") + \
            f"{self.model.training.run_id[:8]}: {'passed' if d.passed else 'REJECTED'}"
        self._finished("model", "train+gate", d.passed, detail)
        if not self.model.passed:
            return None
        self._started("model", "materialize")
        try:
            materialized = model_stage.materialize_model(
                self.config, self.model.version, environ=self.environ
            )
        except CIError as exc:
            self.model_error = f"model stage: {exc.message}"
            self._finished("model", "materialize", False, exc.message)
            return None
        self._finished("model", "materialize", True, f"version {materialized.version}")
        return materialized.build_args()

    def model_and_platform_jobs(self) -> list[PlatformResult]:
        """The model stage beside the platform jobs: each job builds and runs its tests while
        training runs, and its release build (which embeds the registered model) waits for
        the model. A rejected model stops the jobs before any release build or push.

        Docker engine only: Dagger children cannot wait on this process, so there the model
        stage runs first.
        """
        if self.engine != "docker" or self.config.model is None or self.prepared is None:
            self.model_stage()
            return self.platform_jobs()
        return anyio.run(self._concurrent)

    async def _concurrent(self) -> list[PlatformResult]:
        assert self.prepared is not None
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
            return with_model([spec], args)[0]

        async with anyio.create_task_group() as tg:
            tg.start_soon(model_task)
            self.results = await self._docker_jobs(before_release)
        if self.model_blocks:
            self.skipped_reason = f"release builds skipped: {self.model_blocks}"
        return self.results

    async def _docker_jobs(self, before_release: Any = None) -> list[PlatformResult]:
        assert self.prepared is not None
        for spec in self.prepared.specs:
            self._started(spec.platform, "test+build+push", spec.placement.runner or "",
                          spec.placement.kind)
        return await jobs_cmd.execute_async(
            self.prepared, self.config, push=True, environ=self.environ,
            on_result=self._job_done, before_release=before_release,
        )

    def _job_done(self, result: PlatformResult) -> None:
        detail = f"{result.status}, {result.seconds:.0f} s"
        if result.failure:
            detail += f": {result.failure.message}"
        self._finished(result.platform, "test+build+push", result.ok, detail)

    def model_verdict(self) -> ModelVerdict | None:
        if self.model is None:
            return None
        d = self.model.decision
        return ModelVerdict(
            registered_model=self.model.registered_model, alias=self.model.alias,
            run_id=self.model.training.run_id, candidate_version=self.model.version,
            champion_version=d.champion_version, passed=self.model.passed,
            reason="; ".join(d.reasons),
            reused_run=self.model.training.reused, metrics=dict(d.metrics),
            baseline=dict(d.baseline or {}), deltas=dict(d.deltas or {}),
            model_uri=self.model.model_uri or "",
        )

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
        assert self.prepared is not None
        if self.model_blocks:
            self.skipped_reason = f"platform jobs skipped: {self.model_blocks}"
            return []
        if self.engine == "dagger":
            for spec in self.prepared.specs:
                self._started(spec.platform, "test+build+push", spec.placement.runner or "",
                              spec.placement.kind)
            self.results = self._dagger_jobs(self._job_done)
        else:
            self.results = anyio.run(self._docker_jobs)
        return self.results

    def _dagger_jobs(self, done: Any) -> list[PlatformResult]:
        from ci import fanout
        from ci.engines.dagger_routing import Options, run_jobs_dagger_sync

        assert self.prepared is not None
        plan = self.prepared.plan
        results = run_jobs_dagger_sync(
            self.prepared.specs, plan.runners, dict(self.environ),
            options=Options(auth=self.config.publish.auth, insecure=self.config.publish.insecure),
            replace=fanout.qemu_fallback(plan.runners, plan.fallback),
        )
        for r in results:
            done(r)
        return results

    def smoke(self) -> list[SmokeResult]:
        """Run each passed platform's image by digest and load-test it (one at a time, so
        latencies are not skewed by each other on small runners)."""
        if self.config.smoke is None or self.engine != "docker" or self.prepared is None:
            return []
        from ci.smoke import run_smoke

        hosts = {s.platform: s.placement.host for s in self.prepared.specs}
        for r in self.results:
            if not r.ok or r.reference is None:
                continue
            self._started(r.platform, "smoke", placement=r.placement)
            s = run_smoke(platform=r.platform, placement=r.placement, reference=r.reference,
                          config=self.config.smoke, host=hosts.get(r.platform, ""),
                          environ=self.environ)
            self.smoke_results.append(s)
            self._finished(r.platform, "smoke", s.passed,
                           f"p95 {s.p95_ms:.0f} ms (bound {s.bound_ms:g}), "
                           f"errors {s.errors}/{s.requests}" + (f": {s.reason}" if s.reason else ""))
        return self.smoke_results

    def decide(self) -> Verdict:
        """One verdict from every gate; written to the state dir before anything moves."""
        assert self.prepared is not None
        self.verdict = decide(
            run_id=self.prepared.run_id, project=self.config.project.name,
            image=self.config.project.image, created=jobs_cmd.now_rfc3339(),
            source=self.prepared.source,
            expected_platforms=[j.platform for j in self.prepared.plan.jobs],
            platforms=self.results, model=self.model_verdict(),
            model_required=self.config.model is not None, smoke=self.smoke_results,
            smoke_required=self.config.smoke is not None and self.engine == "docker",
            emulation_budget_seconds=self.config.emulation.budget_seconds,
            stage_error=self.model_error,
            extra_reasons=[self.skipped_reason] if self.skipped_reason else [],
        )
        self.write_verdict()
        return self.verdict

    def write_verdict(self) -> Path:
        assert self.verdict is not None
        text = redact(json.dumps(self.verdict.model_dump(mode="json"), indent=2)) + "\n"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "verdict.json"
        path.write_text(text)
        (self.config.state_path / "verdict.json").write_text(text)
        return path

    def preflight_deploy(self) -> None:
        """Check the deploy would be accepted (guard, manifests) BEFORE any tag moves."""
        if self.config.deploy is None or self.prepared is None:
            return
        from ci import gitops

        gitops.init_remote(self.config)
        self._started("release", "deploy preflight")
        probe = f"{self.config.project.image}@sha256:{'0' * 64}"
        try:
            gitops.deploy(self.config, self.prepared.source, probe, self._model_version(),
                          dry_run=True, source_repo=self._source_repo(), environ=self.environ)
        except CIError as exc:
            self._finished("release", "deploy preflight", False, exc.message)
            raise
        self._finished("release", "deploy preflight", True)

    def publish(self) -> Any:
        """Assemble the index from the digests and move every release tag together."""
        assert self.verdict is not None and self.verdict.passed and self.prepared is not None
        self._started("release", "publish")
        try:
            self.published = jobs_cmd.publish_results(
                self.config, self.results,
                expected=[j.platform for j in self.prepared.plan.jobs], environ=self.environ,
                dry_run=self.dry_run,
            )
        except CIError as exc:
            self._finished("release", "publish", False, exc.message)
            raise
        would = "dry run, would publish " if self.dry_run else ""
        self._finished("release", "publish", True,
                       f"{would}{self.published.digest[:19]} tags {', '.join(self.published.tags)}")
        return self.published

    def deploy(self) -> Any:
        if self.config.deploy is None or self.prepared is None or self.published is None:
            return None
        from ci import gitops

        self._started("release", "deploy")
        ref = self._index_ref()
        try:
            self.deployed = gitops.deploy(
                self.config, self.prepared.source, ref, self._model_version(),
                dry_run=self.dry_run, source_repo=self._source_repo(), environ=self.environ,
            )
        except CIError as exc:
            self._finished("release", "deploy", False, exc.message)
            raise
        d = self.deployed
        self._finished("release", "deploy", True,
                       "dry run" if d.dry_run else f"{d.commit[:12]} after {d.attempts} push(es)")
        return self.deployed

    def promote(self) -> Any:
        """Move the alias only after the deploy commit landed (never on a dry run)."""
        version = self._model_version()
        if self.model is None or version is None or self.dry_run:
            return None
        if self.config.deploy is not None and (self.deployed is None or not self.deployed.commit):
            raise GateFailed("not promoting: the deploy commit did not land")
        from ci import model_stage

        commit = self.deployed.commit if self.deployed else ""
        self._started("model", "promote")
        try:
            self.promoted = model_stage.promote(self.config, version, commit, environ=self.environ)
        except CIError as exc:
            self._finished("model", "promote", False, exc.message)
            raise
        self._finished("model", "promote", True, f"{self.promoted.alias} → v{version}")
        return self.promoted

    def notify(self, error: str = "") -> Any:
        """CloudEvents to the webhooks; a failed delivery is reported, never raised."""
        if not self.config.notify.webhooks or self.verdict is None or self.dry_run:
            return None
        from ci.notify import notify

        outcome = "failed" if error else None
        self.notified = anyio.run(lambda: notify(
            self.verdict, self.config.notify, outcome=outcome,  # type: ignore[arg-type]
            index_digest=self.published.digest if self.published else None,
            tags=self.published.tags if self.published else (),
            deploy_commit=self.deployed.commit if self.deployed else None,
            promoted_version=self.promoted.version if self.promoted else None, error=error,
        ))
        return self.notified

    # ------------------------------------------------------------------ outputs
    def _model_version(self) -> str | None:
        return self.model.version if self.model is not None else None

    def _index_ref(self) -> str:
        assert self.published is not None
        tag = next((t for t in self.published.tags if t.startswith("sha-")),
                   self.published.tags[0] if self.published.tags else "")
        keep = self.config.deploy.keep_tag if self.config.deploy else False
        tag_part = f":{tag}" if keep and tag else ""
        return f"{self.config.project.image}{tag_part}@{self.published.digest}"

    def _source_repo(self) -> Path | None:
        from ci import proc

        try:
            top = proc.run(["git", "rev-parse", "--show-toplevel"], cwd=self.config.root_path,
                           check=True, timeout=10)
        except CIError:
            return None
        return Path(top.stdout.strip())

    def outcome(self) -> dict[str, Any]:
        """The machine-readable result of the run (`ci run --json`)."""
        if self.up_to_date is not None:
            return {"run_id": self.run_id, "passed": True, "up_to_date": True,
                    "release": self.up_to_date.model_dump(mode="json")}
        return {
            "run_id": self.run_id,
            "up_to_date": False,
            "passed": bool(self.verdict and self.verdict.passed and not self.failure),
            "failure": self.failure,
            "verdict": self.verdict.model_dump(mode="json") if self.verdict else None,
            "published": self.published.model_dump(mode="json") if self.published else None,
            "deploy": _deploy_dict(self.deployed),
            "promoted": self.promoted.model_dump(mode="json") if self.promoted else None,
            "notifications": (self.notified.model_dump(mode="json")
                              if hasattr(self.notified, "model_dump") else None),
        }


def _deploy_dict(result: Any) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "commit": result.commit, "branch": result.branch, "remote": result.remote,
        "changed_files": list(result.changed_files), "attempts": result.attempts,
        "dry_run": result.dry_run, "pushed": result.pushed,
        "diff": result.diff if result.dry_run else "",
    }
