"""The end of a release (publish → deploy → promote → record), each step in the journal.

These are the only stages that change what users see. Each needs the verdict's Permit, and
each records its phase in the release journal (`ci.stages.journal`) as soon as it landed, so a
run cut off between two of them is finished by the next one instead of started over.
`Release` (handle.py) inherits them; they read the handle's fields declared below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from ci.adapters import signals
from ci.core.config import Config
from ci.core.errors import CIError, DeployRefused, GateFailed, PipelineError, TagMoveError
from ci.core.model import ModelStageResult
from ci.core.oci import ImageRef, Manifest
from ci.core.outcome import ReleaseOutcome
from ci.core.platforms import Platform
from ci.core.ports import Clock, Progress
from ci.core.verdict import Permit, Verdict
from ci.pipelines.ports import Ports
from ci.pipelines.stage import Note, reported
from ci.stages import journal
from ci.stages.prepare import Prepared
from ci.stages.record import ReleaseRecord


class ReleaseEnd:
    """Publish, deploy, promote, record and notify for the release handle."""

    config: Config
    environ: Mapping[str, str]
    only: list[Platform] | None
    dry_run: bool
    progress: Progress | None
    ports: Ports
    pipeline: str
    prepared: Prepared | None
    fingerprint: str
    model: ModelStageResult | None
    verdict: Verdict | None
    outcome_value: ReleaseOutcome

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

    @property
    def model_version(self) -> str | None:
        return self.model.version if self.model is not None else None

    def permit(self) -> Permit:
        """The passed verdict's Permit; GateFailed (nothing moved) for any other verdict."""
        if self.verdict is None:
            raise GateFailed("nothing published: no verdict yet (call decide() first)")
        return self.verdict.permit()

    # ------------------------------------------------------------------ stages
    def resume_unfinished(self) -> bool:
        """Finish a release an earlier run left half done (its journal), before anything
        new; True when one was found. A dry run only reports it."""
        found = journal.load(self.config)
        if found is None:
            return False
        from ci.stages.resume import resume

        with self._stage("release", "finish unfinished release") as note:
            if self.dry_run:
                note.detail = f"{found.describe()} (dry run: left as is)"
                return True
            client = self.ports.registry(self.config, self.environ)
            try:
                note.detail = resume(self.config, found, client=client, git=self.ports.git,
                                     tracking=self.ports.tracking,
                                     source_repo=self._source_repo(), environ=self.environ)
            finally:
                client.close()
        return True

    def record_release(self) -> None:
        """Remember what this release published, for the next run's up-to-date check; the
        release is complete, so its journal goes."""
        published, deployed = self.outcome_value.published, self.outcome_value.deployed
        if published is None or self.dry_run:
            return
        if self.fingerprint:
            from ci.stages import record

            record.save(self.config, ReleaseRecord(
                fingerprint=self.fingerprint, run_id=self.run_id,
                image=self.config.project.image, index_digest=published.digest,
                tags=list(published.tags), platforms=list(published.platforms),
                deploy_commit=deployed.commit if deployed else None,
                deploy_branch=deployed.branch if deployed else None,
                model_version=self.model_version,
            ))
        journal.finish(self.config)

    def preflight_deploy(self) -> None:
        """Check the deploy would be accepted (guard, manifests) BEFORE any tag moves."""
        if self.config.deploy is None:
            return
        prepared = self._need("preflight_deploy()")
        self.permit()
        self.ports.git.init_remote(self.config)
        with self._stage("release", "deploy preflight"):
            from ci.stages.deploy import PREFLIGHT_DIGEST

            probe = f"{self.config.project.image}@{PREFLIGHT_DIGEST}"  # not verified: unsigned yet
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
        (`tags` replaces the configured ones). Raises GateFailed unless the verdict passed.

        The journal is written before the first tag write; SIGINT/SIGTERM wait until every
        tag moved (or was rolled back) and the journal says so. A tag that holds a newer
        source (by git ancestry) stays where it is.
        """
        from ci.stages.ordering import tag_guard
        from ci.stages.publish import publish_release
        from ci.stages.sign import signer

        permit = self.permit()
        self.check_publishable()
        prepared = self._need("publish()")
        # signs the index after it is written by digest, before any tag moves ([sign])
        sign = None if self.dry_run else signer(self.config, permit.verdict, self.environ)

        def intent(index: Manifest, moving: list[str], previous: dict[str, str | None]) -> None:
            journal.begin(
                self.config, run_id=self.run_id, image=self.config.project.image,
                repository=ImageRef.parse(self.config.project.image).repository, index=index,
                tags=moving, previous=previous, platforms=list(prepared.expected),
                manifests={r.platform: str(r.digest) for r in permit.verdict.platforms},
                source=prepared.source, fingerprint=self.fingerprint,
                model_version=self.model_version)

        with self._stage("release", "publish") as note, signals.deferred("the publish"):
            client = self.ports.registry(self.config, self.environ)
            try:
                published = publish_release(
                    permit, self.config, client, tags=tags,
                    dry_run=self.dry_run, on_intent=intent, before_tags=sign,
                    guard=tag_guard(self._source_repo(), prepared.source.sha, self.environ))
            except TagMoveError as exc:
                if not exc.moved:  # every moved tag was rolled back: the world is as it was
                    journal.finish(self.config)
                raise
            finally:
                client.close()
            journal.advance(self.config, "published")
            self.outcome_value = self.outcome_value.with_(published=published)
            would = "dry run, would publish " if self.dry_run else ""
            kept = "; " + "; ".join(published.kept.values()) if published.kept else ""
            signed = " (signed)" if sign is not None else ""
            note.detail = f"{would}{published.digest[:19]}{signed} tags {', '.join(published.tags)}{kept}"
        return self.outcome_value

    def deploy(self) -> ReleaseOutcome:
        """Pin the deploy manifests to the published index, commit, push (GitOps)."""
        published = self.outcome_value.published
        if self.config.deploy is None or published is None:
            return self.outcome_value
        prepared = self._need("deploy()")
        self.permit()
        with self._stage("release", "deploy") as note:
            try:
                deployed = self.ports.git.deploy(
                    self.config, prepared.source, self._index_ref(), self.model_version,
                    dry_run=self.dry_run, source_repo=self._source_repo(), environ=self.environ)
            except DeployRefused:
                journal.finish(self.config)  # a newer release is deployed: nothing to finish
                raise
            except CIError as exc:
                journal.note_failure(self.config, f"deploy: {exc.message}")
                raise
            if not deployed.dry_run:
                journal.advance(self.config, "deployed", deploy_commit=deployed.commit,
                                deploy_branch=deployed.branch)
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
            try:
                promoted = self.ports.tracking.promote(
                    self.config, version, deployed.commit if deployed else "",
                    environ=self.environ)
            except CIError as exc:
                journal.note_failure(self.config, f"promote: {exc.message}")
                raise
            journal.advance(self.config, "promoted")
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
    def _index_ref(self) -> str:
        published = self.outcome_value.published
        if published is None:
            raise PipelineError(f"{self.pipeline}: deploy() needs publish() first")
        from ci.stages.deploy import index_ref

        return index_ref(self.config, published)

    def _source_repo(self) -> Path | None:
        return self.ports.git.source_repo(self.config.root_path)
