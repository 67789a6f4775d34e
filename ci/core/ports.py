"""The ports stages talk through: small protocols the adapters implement and tests fake.

A stage never names a tool; it receives one of these (or a factory for it) as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from ci.core.config import Config, NotifyConfig, SmokeConfig
from ci.core.model import MaterializedModel, ModelStageResult, PromoteResult
from ci.core.oci import Manifest
from ci.core.outcome import DeployResult, NotifyReport
from ci.core.results import JobSpec, PlatformResult, SourceInfo
from ci.core.verdict import SmokeResult, Verdict

PlacementKind = Literal["native", "emulated", "unavailable"]


class Engine(Protocol):
    """Runs one platform job on its placed runner.

    `run_job` returns a failed `PlatformResult` when tests or a build fail (that is data
    for the verdict) and raises `CIError` only when the engine itself is broken or
    unreachable. It never moves a tag: the image is pushed by digest only.
    """

    name: str

    async def run_job(self, spec: JobSpec) -> PlatformResult: ...


EngineFactory = Callable[[JobSpec], Engine]


class Progress(Protocol):
    """Where stages report what they start and finish (the console, a test recorder...)."""

    def lane(self, lane: str, placement: str = "") -> None: ...

    def stage_started(self, lane: str, stage: str, detail: str = "", placement: str = "") -> None:
        ...

    def stage_finished(self, lane: str, stage: str, ok: bool, detail: str = "") -> None: ...


class RegistryPort(Protocol):
    """The registry calls publish makes (the OCI distribution API, nothing engine-specific)."""

    def descriptor(self, repo: str, digest: str) -> dict[str, Any]: ...

    def get_manifest(self, repo: str, ref: str) -> Manifest: ...

    def resolve(self, repo: str, ref: str) -> str | None: ...

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str: ...

    def get_blob(self, repo: str, digest: str) -> bytes: ...

    def put_blob(self, repo: str, data: bytes) -> str:
        """Upload a blob (attestation layers, configs); returns its digest."""
        ...

    def remove_tag(self, repo: str, tag: str) -> None: ...

    def index_platforms(self, repo: str, ref: str) -> list[str]: ...

    def close(self) -> None: ...


class TrackingPort(Protocol):
    """The model stage against a tracking server: train/reuse + gate + register, hand the
    registered artifact to the builds, move the alias."""

    def train_and_gate(self, config: Config, source: SourceInfo, run_id: str, *,
                       environ: Mapping[str, str], retrain: str = "") -> ModelStageResult:
        """`retrain` names the flag forcing a new run ('--retrain', '--force'); '' = reuse."""
        ...

    def materialize(self, config: Config, version: str, *,
                    environ: Mapping[str, str]) -> MaterializedModel: ...

    def promote(self, config: Config, version: str, deploy_commit: str, *,
                environ: Mapping[str, str]) -> PromoteResult: ...


class GitPort(Protocol):
    """The deploy branch: seed a local remote if asked, pin the manifests, commit, push."""

    def init_remote(self, config: Config) -> bool: ...

    def deploy(self, config: Config, source: SourceInfo, index_ref: str,
               model_version: str | None, *, dry_run: bool, source_repo: Path | None,
               environ: Mapping[str, str]) -> DeployResult: ...

    def source_repo(self, root: Path) -> Path | None: ...


class SmokePort(Protocol):
    """Run one platform's image by digest and load-test it."""

    def __call__(self, *, platform: str, placement: PlacementKind, reference: str,
                 config: SmokeConfig, host: str, environ: Mapping[str, str]) -> SmokeResult: ...


class NotifyPort(Protocol):
    """Deliver the run's CloudEvent to the webhooks; failures are reported, never raised."""

    def __call__(self, verdict: Verdict, config: NotifyConfig, *, outcome: str | None,
                 index_digest: str | None, tags: Sequence[str], deploy_commit: str | None,
                 promoted_version: str | None, error: str) -> NotifyReport: ...


Clock = Callable[[], datetime]
