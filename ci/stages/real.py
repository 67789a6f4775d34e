"""The real implementations of the ports (core/ports.py): MLflow, git, the registry, Docker.

A release handle uses these unless it is given others; every heavy import (mlflow, httpx
clients, the engines) happens inside the call that needs it, so building a handle is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from ci.core.config import Config, NotifyConfig, SmokeConfig
from ci.core.errors import CIError
from ci.core.model import MaterializedModel, ModelStageResult, PromoteResult
from ci.core.outcome import DeployResult, NotifyReport
from ci.core.ports import PlacementKind, RegistryPort
from ci.core.results import SourceInfo
from ci.core.verdict import SmokeResult, Verdict
from ci.stages.ordering import TagGuard


class MlflowTracking:
    """TrackingPort over MLflow (the configured tracking URI, embedded sqlite by default)."""

    def train_and_gate(self, config: Config, source: SourceInfo, run_id: str, *,
                       environ: Mapping[str, str], retrain: str = "") -> ModelStageResult:
        from ci.stages import model

        return model.train_and_gate(config, source, run_id, environ=environ, retrain=retrain)

    def materialize(self, config: Config, version: str, *,
                    environ: Mapping[str, str]) -> MaterializedModel:
        from ci.stages import model

        return model.materialize_model(config, version, environ=environ)

    def promote(self, config: Config, version: str, deploy_commit: str, *,
                environ: Mapping[str, str]) -> PromoteResult:
        from ci.stages import model

        return model.promote(config, version, deploy_commit, environ=environ)


class GitDeploy:
    """GitPort over the git CLI: the deploy remote and the source checkout."""

    def init_remote(self, config: Config) -> bool:
        from ci.stages import deploy

        return deploy.init_remote(config)

    def deploy(self, config: Config, source: SourceInfo, index_ref: str,
               model_version: str | None, *, dry_run: bool, source_repo: Path | None,
               environ: Mapping[str, str]) -> DeployResult:
        from ci.stages import deploy

        return deploy.deploy(config, source, index_ref, model_version, dry_run=dry_run,
                             source_repo=source_repo, environ=environ)

    def source_repo(self, root: Path) -> Path | None:
        from ci.adapters import proc

        try:
            top = proc.run(["git", "rev-parse", "--show-toplevel"], cwd=root, check=True,
                           timeout=10)
        except CIError:
            return None
        return Path(top.stdout.strip())


def tag_guard_for(config: Config, sha: str, environ: Mapping[str, str]) -> TagGuard:
    """The monotonic tag rule over the project's own checkout (see stages/ordering)."""
    from ci.stages.ordering import tag_guard

    return tag_guard(GitDeploy().source_repo(config.root_path), sha, environ)


def registry_for(config: Config, environ: Mapping[str, str]) -> RegistryPort:
    """The configured image's registry over HTTP (auth from publish.auth)."""
    from ci.adapters.registry import RegistryClient

    return RegistryClient.for_image(config.project.image, config.publish, environ)


def docker_smoke(*, platform: str, placement: PlacementKind, reference: str,
                 config: SmokeConfig, host: str, environ: Mapping[str, str]) -> SmokeResult:
    """SmokePort on the platform's Docker runner."""
    from ci.stages.smoke import run_smoke

    return run_smoke(platform=platform, placement=placement, reference=reference,
                     config=config, host=host, environ=environ)


def cloudevents_notify(verdict: Verdict, config: NotifyConfig, *, outcome: str | None,
                       index_digest: str | None, tags: Sequence[str], deploy_commit: str | None,
                       promoted_version: str | None, error: str) -> NotifyReport:
    """NotifyPort: one CloudEvent per run to every webhook."""
    from ci.stages.notify import notify

    return anyio.run(lambda: notify(
        verdict, config, outcome=outcome, index_digest=index_digest, tags=tags,
        deploy_commit=deploy_commit, promoted_version=promoted_version, error=error))
