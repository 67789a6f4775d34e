"""Guards a user's pipeline cannot talk its way around (found by driving the handle with
fakes): a platform subset is never published, the alias moves only to the version the verdict
weighed and only after a publish, and editing a passed verdict changes nothing it permits."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.core import config as cfg
from ci.core.config import Config
from ci.core.errors import GateFailed, UsageError
from ci.core.platforms import parse
from ci.pipelines import release
from ci.pipelines.handle import Release
from tests.fakes import Fakes
from tests.unit.test_release_order import ENV, REPO, TOML

NO_DEPLOY = TOML.split("[deploy]")[0] + "[smoke]" + TOML.split("[smoke]")[1]


def handle(config: Config, fakes: Fakes, **kw: object) -> Release:
    return Release(config=config, environ=ENV, ports=fakes.ports(), force=True, **kw)  # type: ignore[arg-type]


def gated(run: Release) -> None:
    run.plan()
    run.model_and_platform_jobs()
    run.smoke()
    assert run.decide().passed


def test_a_platform_subset_is_refused_before_any_work(tmp_path: Path) -> None:
    fakes = Fakes()
    run = handle(cfg.loads(TOML, root=str(tmp_path)), fakes, only=[parse("linux/amd64")])
    with pytest.raises(UsageError, match="leaves out linux/arm64"):
        release.pipeline(run)
    assert fakes.recorder == ["plan"]  # no training, no job, no push, nothing moved
    assert fakes.registry.pushed == [] and not fakes.moved


def test_a_subset_verdict_cannot_be_published_by_a_custom_pipeline(tmp_path: Path) -> None:
    fakes = Fakes()
    run = handle(cfg.loads(TOML, root=str(tmp_path)), fakes, only=[parse("linux/amd64")])
    gated(run)  # tests on one platform may pass...
    with pytest.raises(UsageError, match="leaves out linux/arm64"):
        run.publish()  # ...but a release holds every configured platform
    assert not fakes.moved


def test_promote_before_publish_is_refused_without_deploy(tmp_path: Path) -> None:
    fakes = Fakes()
    run = handle(cfg.loads(NO_DEPLOY, root=str(tmp_path)), fakes)
    gated(run)
    with pytest.raises(GateFailed, match="nothing was published"):
        run.promote()
    assert fakes.tracking.promoted == []
    run.publish()
    run.promote()
    assert [v for v, _ in fakes.tracking.promoted] == [run.model_version]


def test_promote_refuses_a_version_the_verdict_did_not_weigh(tmp_path: Path) -> None:
    fakes = Fakes()
    run = handle(cfg.loads(NO_DEPLOY, root=str(tmp_path)), fakes)
    run.plan()
    run.platform_jobs()
    run.smoke()
    assert run.decide(require_model=False).passed
    run.publish()
    run.model_stage()  # a model trained after the verdict: no image embeds it
    with pytest.raises(GateFailed, match="not the one the verdict weighed"):
        run.promote()
    assert fakes.tracking.promoted == []


def test_editing_a_passed_verdict_changes_nothing_it_permits(tmp_path: Path) -> None:
    fakes = Fakes()
    run = handle(cfg.loads(TOML, root=str(tmp_path)), fakes)
    gated(run)
    assert run.verdict is not None
    tested = {r.platform: r.digest for r in run.verdict.platforms}
    untested = fakes.registry.add_image(REPO, "linux/arm64")
    run.verdict.platforms[1] = run.verdict.platforms[1].model_copy(update={"digest": untested})
    outcome = run.publish()
    assert outcome.published is not None
    assert outcome.published.manifests == tested
