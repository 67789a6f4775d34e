"""From config + plan to the `JobSpec` of one platform job (pure: no I/O, no clock).

Every engine (docker, dagger, a CI matrix leg) starts from the same spec, so the build
args, labels and paths of a platform job are decided once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from ci.core import platforms
from ci.core.config import Config
from ci.core.errors import ConfigError, ConfigProblem, PlanUnavailable, PlatformError
from ci.core.plan import PlatformJob
from ci.core.results import JobSpec, SourceInfo

LABEL_SOURCE = "org.opencontainers.image.source"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_TITLE = "org.opencontainers.image.title"
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_RUN_ID = "dev.maci.run-id"
LABEL_PLATFORM = "dev.maci.platform"
LABEL_MODEL_SHA256 = "dev.maci.model.sha256"


def expand_base(template: str, platform: platforms.Platform) -> str:
    """`maci/python:bookworm-{arch}` → `maci/python:bookworm-arm64` for linux/arm64 (the
    fields are `platforms.TEMPLATE_FIELDS`); a bad template is a config error."""
    try:
        return platforms.expand(template, platform)
    except PlatformError as exc:
        raise ConfigError([ConfigProblem("build.base_image", template, exc.message)]) from None


def version_of(source: SourceInfo) -> str:
    """The image version: the git tag without a leading `v`, else the short commit sha."""
    if source.tag:
        return source.tag[1:] if source.tag[:1] in "vV" and source.tag[1:2].isdigit() else (
            source.tag
        )
    return source.sha[:12]


def source_created(source: SourceInfo) -> str:
    """The image's `created`: the commit's time (RFC 3339, UTC), never the clock of the build,
    so rebuilding one commit gives the same image; '' when the time is unknown."""
    if source.commit_time is None:
        return ""
    return datetime.fromtimestamp(source.commit_time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels_for(config: Config, source: SourceInfo, platform: str) -> dict[str, str]:
    """OCI labels every image of the run carries; empty values are left out. Nothing per run
    (run id, build time): those go to the verdict and the signature, so digests reproduce."""
    labels = {
        LABEL_SOURCE: source.repository_url,
        LABEL_REVISION: source.sha,
        LABEL_CREATED: source_created(source),
        LABEL_TITLE: config.project.name,
        LABEL_VERSION: version_of(source),
        LABEL_PLATFORM: platform,
    }
    return {k: v for k, v in labels.items() if v}


def spec_for(
    config: Config,
    plan_job: PlatformJob,
    source: SourceInfo,
    run_id: str,
    output_dir: str | Path,
) -> JobSpec:
    """The spec of one placed platform job."""
    if plan_job.placement.kind == "unavailable":
        raise PlanUnavailable(f"{plan_job.platform}: {plan_job.placement.reason}")
    platform = platforms.parse(plan_job.platform)
    root = config.root_path.resolve()
    context = (root / config.build.context).resolve()
    build_args = dict(config.build.build_args)
    if config.build.base_image:
        build_args["BASE"] = expand_base(config.build.base_image, platform)
    ca = str((root / config.build.ca_bundle).resolve()) if config.build.ca_bundle else None
    out = Path(output_dir)
    out = (out if out.is_absolute() else root / out) / platform.slug
    return JobSpec(
        platform=str(platform),
        placement=plan_job.placement,
        project=config.project.name,
        image=config.project.image,
        context=str(context),
        dockerfile=str((context / config.build.dockerfile).resolve()),
        build_target=config.build.target,
        test_target=config.test.target,
        test_command=list(config.test.command),
        test_env=dict(config.test.env),
        junit_path=config.test.junit_path,
        test_timeout=config.test.timeout_seconds,
        model_check=list(config.model.check_command) if config.model else [],
        build_args=build_args,
        labels=labels_for(config, source, str(platform)),
        ca_bundle=ca,
        output_dir=str(out),
        oci_layout=str(config.state_path / "oci" / platform.slug),
        compression=config.publish.compression,
        reproducible=config.build.reproducible,
        compression_level=config.publish.compression_level,
        run_id=run_id,
        source=source,
    )


def with_model(specs: list[JobSpec], build_args: Mapping[str, str]) -> list[JobSpec]:
    """Specs whose release build embeds a registered model: MODEL_* build args + labels."""
    labels = {
        "dev.maci.model.name": build_args.get("MODEL_NAME", ""),
        "dev.maci.model.version": build_args.get("MODEL_VERSION", ""),
        "dev.maci.model.uri": build_args.get("MODEL_URI", ""),
        LABEL_MODEL_SHA256: build_args.get("MODEL_SHA256", ""),
    }
    return [
        s.model_copy(update={"build_args": {**s.build_args, **build_args},
                             "labels": {**s.labels, **{k: v for k, v in labels.items() if v}}})
        for s in specs
    ]
