"""The release pipelines' REAL order, driven with in-memory fakes at the ports (tests/fakes.py).

Nothing user-visible (a tag, the deploy branch, the alias) may move unless every gate passed;
these tests run `ci.pipelines.release` / `image_only` end to end and watch every port.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ci.core import config as cfg
from ci.core.config import Config
from ci.core.errors import DeployRefused, GateFailed, PipelineError, RegistryError, UsageError
from ci.core.results import SourceInfo
from ci.core.verdict import Permit, Verdict
from ci.pipelines import image_only, release
from ci.pipelines.handle import Release
from ci.stages.publish import publish_release
from tests.fakes import DEPLOY_COMMIT, Fakes

AMD, ARM = "linux/amd64", "linux/arm64"
REPO = "examples/wine"
SHA = "0123456789abcdef0123456789abcdef01234567"
TAGS = [f"sha-{SHA}", "main", "latest"]
ENV = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": SHA, "GITHUB_REF": "refs/heads/main",
       "GITHUB_REPOSITORY": "acme/wine", "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "1"}
TOML = f"""
[project]
name = "wine"
image = "127.0.0.1:5999/{REPO}"
platforms = ["{AMD}", "{ARM}"]

[emulation]
budget_seconds = 60

[model]
train_command = ["python", "train.py"]
registered_model = "wine-classifier"
alias = "champion"

[model.thresholds.accuracy]
threshold = 0.85

[deploy]
remote = "deploy.git"
branch = "main"
manifests = ["k8s/rollout.yaml"]

[smoke]
requests = 10

[notify]
webhooks = ["https://hooks.example.invalid/release"]
"""
REJECTED = "release rejected, nothing published: "
Pipeline = Callable[[Release], int]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return cfg.loads(TOML, root=str(tmp_path))


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def handle(config: Config, fakes: Fakes, *, dry_run: bool = False) -> Release:
    return Release(config=config, environ=ENV, ports=fakes.ports(), force=True, dry_run=dry_run)


def assert_nothing_moved(fakes: Fakes) -> None:
    assert fakes.registry.writes == []
    assert fakes.registry.tags(REPO) == {}
    assert fakes.git.real_deploys == []
    assert "promote" not in fakes.tracking.calls
    assert not fakes.moved


def with_license_gate(run: Release) -> int:
    """A project pipeline: the built-in stages plus its own (failing) gate."""
    run.plan()
    run.model_and_platform_jobs()
    run.smoke()
    run.add_gate("licenses", False, "GPL-3.0 found in the image")
    return release.finish(run)


def test_full_release_runs_every_stage_in_order(config: Config, fakes: Fakes) -> None:
    """The promise of the built-in pipeline: gates first, then preflight, publish, deploy, promote."""
    run = handle(config, fakes)
    assert release.pipeline(run) == 0
    rec = fakes.recorder
    assert rec[0] == "plan"
    for p in (AMD, ARM):
        assert rec.index(f"job {p}") < rec.index(f"tests passed {p}") < rec.index(f"release {p}")
        assert rec.index("train") < rec.index("materialize") < rec.index(f"release {p}")
    for p in (AMD, ARM):  # each platform's smoke right after its own release, not after all
        assert rec.index(f"release {p}") < rec.index(f"smoke {p}") < rec.index("preflight")
    assert rec[rec.index("preflight"):] == [
        "preflight", "index", *(f"tag {t}" for t in TAGS), "deploy", "promote", "notify"]
    assert [s.platform for s in run.smoke_results] == [AMD, ARM]  # platform order, always
    assert run.verdict is not None and [s.platform for s in run.verdict.smoke] == [AMD, ARM]
    assert fakes.tracking.calls == ["train_and_gate", "materialize", "promote"]
    index = run.outcome_value.published
    assert index is not None and index.tags == TAGS
    assert fakes.registry.tags(REPO) == dict.fromkeys(TAGS, index.digest)
    assert fakes.registry.index_platforms(REPO, "latest") == [AMD, ARM]
    assert fakes.git.index_refs == [f"{config.project.image}:sha-{SHA}@{index.digest}"]
    assert fakes.tracking.promoted == [("7", DEPLOY_COMMIT)]
    (sent,) = fakes.notify.calls
    assert sent.verdict.passed and sent.error == "" and sent.promoted_version == "7"
    assert run.outcome()["passed"] is True


def test_release_builds_embed_the_gated_model(config: Config, fakes: Fakes) -> None:
    """The image a release pushes must carry the version the gate passed, not the champion."""
    release.pipeline(handle(config, fakes))
    for p in (AMD, ARM):
        spec = fakes.engines.released[p]
        assert spec.build_args["MODEL_VERSION"] == "7"
        assert spec.build_args["MODEL_SHA256"] == "0" * 64  # what materialize checked
        assert spec.labels["dev.maci.model.version"] == "7"
        assert spec.labels["dev.maci.model.sha256"] == "0" * 64


@pytest.mark.parametrize(("force", "retrain"), [(True, "--force"), (False, "")])
def test_force_really_retrains(config: Config, fakes: Fakes, force: bool, retrain: str) -> None:
    """`ci run --force` reaches the model stage too: a new training run, not a reused one."""
    run = Release(config=config, environ=ENV, ports=fakes.ports(), force=force)
    run.plan()
    run.model_and_platform_jobs()
    assert fakes.tracking.retrain == [retrain]


def _tests_fail(f: Fakes) -> None:
    f.engines.outcomes[ARM] = "tests fail"


def _engine_error(f: Fakes) -> None:
    f.engines.outcomes[AMD] = "engine error"


def _model_rejected(f: Fakes) -> None:
    f.tracking.gate_passes = False


def _mlflow_down(f: Fakes) -> None:
    f.tracking.down.add("train_and_gate")


def _smoke_fails(f: Fakes) -> None:
    f.smoke.failing.add(ARM)


def _over_budget(f: Fakes) -> None:
    f.plan.emulated.add(ARM)
    f.engines.emulated_seconds[ARM] = 120.0


def _nothing(f: Fakes) -> None:
    pass


@pytest.mark.parametrize(("setup", "pipeline", "first"), [
    (_tests_fail, release.pipeline, f"{ARM}: tests failed on {ARM} (1 failed"),
    (_engine_error, release.pipeline, f"{AMD}: buildx exploded on {AMD}"),
    (_model_rejected, release.pipeline, "model gate: Metric accuracy value threshold check"),
    (_mlflow_down, release.pipeline, "model stage: MLflow at http://mlflow.invalid does not"),
    (_smoke_fails, release.pipeline, f"{ARM}: smoke: every /predict answered 500"),
    (_over_budget, release.pipeline, "emulation budget: 120 s emulated > 60 s"),
    (_nothing, with_license_gate, "licenses: GPL-3.0 found in the image"),
], ids=["tests-fail", "engine-error", "model-rejected", "mlflow-down", "smoke-fails",
        "emulation-budget", "custom-gate"])
def test_a_failed_gate_moves_nothing_and_says_why(
        config: Config, fakes: Fakes, setup: Callable[[Fakes], None], pipeline: Pipeline,
        first: str) -> None:
    """Every gate blocks on its own; the GateFailed names the verdict's first reason."""
    setup(fakes)
    run = handle(config, fakes)
    with pytest.raises(GateFailed) as info:
        pipeline(run)
    assert info.value.message.startswith(REJECTED + first)
    assert run.verdict is not None and not run.verdict.passed
    assert run.verdict.reasons[0].startswith(first)
    assert_nothing_moved(fakes)
    assert "preflight" not in fakes.recorder
    (sent,) = fakes.notify.calls
    assert sent.verdict == run.verdict and sent.error == "" and sent.index_digest is None
    on_disk = Verdict.model_validate_json((config.state_path / "verdict.json").read_text())
    assert on_disk == run.verdict


def _materialize_fails(f: Fakes) -> None:
    f.tracking.down.add("materialize")


@pytest.mark.parametrize("setup", [_model_rejected, _mlflow_down, _materialize_fails])
def test_a_failed_model_stage_stops_every_release_build(
        config: Config, fakes: Fakes, setup: Callable[[Fakes], None]) -> None:
    """Tests run beside training, but no image is built or pushed once the model failed."""
    setup(fakes)
    with pytest.raises(GateFailed):
        release.pipeline(handle(config, fakes))
    assert [e for e in fakes.recorder if e.startswith("release ")] == []
    assert {f"skipped release {p}" for p in (AMD, ARM)} <= set(fakes.recorder)
    assert fakes.registry.pushed == [] and "promote" not in fakes.tracking.calls


def test_a_refused_preflight_leaves_no_tag(config: Config, fakes: Fakes) -> None:
    """The deploy guard is asked BEFORE any tag moves, so its refusal costs nothing."""
    fakes.git.refuse_preflight = True
    run = handle(config, fakes)
    with pytest.raises(DeployRefused):
        release.pipeline(run)
    assert_nothing_moved(fakes)
    assert fakes.git.calls == ["init_remote", "deploy dry_run=True"]
    (sent,) = fakes.notify.calls
    assert sent.verdict.passed and "newer source commit" in sent.error
    assert run.outcome()["passed"] is False


def test_a_refused_deploy_is_never_promoted(config: Config, fakes: Fakes) -> None:
    """The alias follows the deploy: a deploy that raised leaves the champion where it was."""
    fakes.git.refuse_deploy = True
    run = handle(config, fakes)
    with pytest.raises(DeployRefused):
        release.pipeline(run)
    assert fakes.registry.tags(REPO)  # published, then the deploy was refused
    assert "promote" not in fakes.tracking.calls and fakes.tracking.promoted == []
    assert fakes.recorder[-2:] == ["deploy", "notify"]
    assert fakes.notify.calls[-1].error and fakes.notify.calls[-1].promoted_version is None


def test_a_deploy_without_a_commit_is_not_promoted(config: Config, fakes: Fakes) -> None:
    """A deploy that returned but did not land (no commit) must not move the alias either."""
    fakes.git.land = False
    with pytest.raises(GateFailed, match="deploy commit did not land"):
        release.pipeline(handle(config, fakes))
    assert fakes.tracking.promoted == []


def test_a_failed_tag_write_rolls_back_every_tag(config: Config, fakes: Fakes) -> None:
    """Tags move together or not at all; the deploy and the alias wait for all of them."""
    fakes.registry.fail_tags.add("latest")
    with pytest.raises(RegistryError, match="no tag moved"):
        release.pipeline(handle(config, fakes))
    assert fakes.registry.tags(REPO) == {}
    assert fakes.git.real_deploys == [] and fakes.tracking.promoted == []


def test_dry_run_runs_every_gate_and_moves_nothing(config: Config, fakes: Fakes) -> None:
    """--dry-run: the would-be digest and deploy diff, but no registry write, push or alias."""
    run = handle(config, fakes, dry_run=True)
    assert release.pipeline(run) == 0
    assert run.outcome_value.published is not None and run.outcome_value.published.dry_run
    assert_nothing_moved(fakes)
    assert fakes.notify.calls == []


def test_image_only_needs_no_model_and_never_calls_tracking(config: Config, fakes: Fakes) -> None:
    """A [model] in the config does not make image_only wait for, or ask, MLflow."""
    fakes.tracking.gate_passes = False  # would reject, if anyone asked
    run = handle(config, fakes)
    assert image_only.pipeline(run) == 0
    assert fakes.tracking.calls == [] and "train" not in fakes.recorder
    assert run.verdict is not None and run.verdict.passed and run.verdict.model is None
    assert fakes.registry.tags(REPO) and fakes.git.real_deploys
    assert all("MODEL_VERSION" not in s.build_args for s in fakes.engines.released.values())


def test_image_only_refuses_like_the_release(config: Config, fakes: Fakes) -> None:
    """The image-only verdict still weighs tests and smoke."""
    fakes.engines.outcomes[ARM] = "tests fail"
    with pytest.raises(GateFailed, match=REJECTED + f"{ARM}: tests failed"):
        image_only.pipeline(handle(config, fakes))
    assert_nothing_moved(fakes)


def _decided(config: Config, fakes: Fakes) -> Release:
    run = handle(config, fakes)
    run.plan()
    run.model_and_platform_jobs()
    run.smoke()
    run.decide()
    return run


def test_publish_with_tags_moves_exactly_those(config: Config, fakes: Fakes) -> None:
    """A pipeline's own tags replace the configured ones (e.g. a nightly)."""
    run = _decided(config, fakes)
    outcome = run.publish(tags=["nightly-20240506"])
    assert outcome.published is not None and outcome.published.tags == ["nightly-20240506"]
    assert list(fakes.registry.tags(REPO)) == ["nightly-20240506"]


def test_publish_with_an_invalid_tag_writes_nothing(config: Config, fakes: Fakes) -> None:
    """Tags are checked before the first write."""
    run = _decided(config, fakes)
    with pytest.raises(UsageError, match="not valid OCI tags"):
        run.publish(tags=["ok", "-bad tag"])
    assert fakes.registry.writes == []


def test_publish_before_decide_raises_and_writes_nothing(config: Config, fakes: Fakes) -> None:
    """Passed jobs are not a verdict: only decide() mints the Permit publish needs."""
    run = handle(config, fakes)
    run.plan()
    run.model_and_platform_jobs()
    run.smoke()
    with pytest.raises(GateFailed, match="no verdict yet"):
        run.publish()
    assert_nothing_moved(fakes)


def test_stages_after_a_rejection_all_refuse(config: Config, fakes: Fakes) -> None:
    """A pipeline that ignores a rejected verdict still cannot publish, deploy or promote."""
    fakes.engines.outcomes[ARM] = "tests fail"
    run = _decided(config, fakes)
    assert run.verdict is not None and not run.verdict.passed
    for stage in (run.publish, run.preflight_deploy, run.promote):
        with pytest.raises(GateFailed, match=REJECTED + f"{ARM}: tests failed"):
            stage()
    run.deploy()  # nothing was published: nothing to deploy
    assert_nothing_moved(fakes)
    assert fakes.git.calls == []


def test_a_verdict_not_made_by_decide_has_no_permit(config: Config, fakes: Fakes) -> None:
    """passed=True by hand, a verdict re-read from JSON or an edited copy: none can publish."""
    assert release.pipeline(handle(config, fakes)) == 0
    text = (config.state_path / "verdict.json").read_text()
    reread = Verdict.model_validate_json(text)
    assert reread.passed
    by_hand = Verdict(run_id="r", project="wine", image=config.project.image, created="",
                      source=SourceInfo(sha=SHA), expected_platforms=[], platforms=[],
                      passed=True)
    fakes2 = Fakes()
    fakes2.engines.outcomes[ARM] = "tests fail"
    rejected = _decided(config, fakes2).verdict
    assert rejected is not None
    edited = rejected.model_copy(update={"passed": True, "reasons": []})
    for verdict in (reread, by_hand, edited):
        with pytest.raises(GateFailed, match="not made by decide"):
            verdict.permit()
    with pytest.raises(GateFailed, match="only by decide"):
        Permit(reread, object())
    with pytest.raises(GateFailed, match="takes the Permit"):
        publish_release(reread, config, fakes2.registry)  # type: ignore[arg-type]
    run = _decided(config, fakes2)
    run.verdict = reread  # smuggle a passed verdict into a rejected run
    with pytest.raises(GateFailed, match="not made by decide"):
        run.publish()
    assert fakes2.registry.writes == []


@pytest.mark.parametrize("misuse", [
    lambda run: run.decide(),
    lambda run: run.platform_jobs(),
    lambda run: run.model_and_platform_jobs(),
    lambda run: run.model_stage(),
    lambda run: run.smoke(),
    lambda run: run.check_up_to_date(),
    lambda run: run.write_verdict(),
], ids=["decide", "platform_jobs", "model_and_platform_jobs", "model_stage", "smoke",
        "check_up_to_date", "write_verdict"])
def test_a_stage_before_plan_is_a_pipeline_error(
        config: Config, fakes: Fakes, misuse: Callable[[Release], object]) -> None:
    """Stage-order mistakes in a user's pipeline fail loudly (exit 2) and touch no port."""
    with pytest.raises(PipelineError):
        misuse(handle(config, fakes))
    assert fakes.recorder == [] and not fakes.moved


def test_a_gate_added_after_decide_is_a_pipeline_error(config: Config, fakes: Fakes) -> None:
    """A gate the verdict never weighed must not look as if it counted."""
    run = _decided(config, fakes)
    with pytest.raises(PipelineError, match="after decide"):
        run.add_gate("late", False, "too late")


SCRIPT = f"""
import json, sys
from ci.core import config as cfg
from ci.pipelines.handle import Release
from tests.fakes import Fakes

fakes = Fakes()
fakes.engines.outcomes[{ARM!r}] = "tests fail"
config = cfg.loads({TOML!r}, root=sys.argv[1])
run = Release(config=config, environ={ENV!r}, ports=fakes.ports(), force=True)
run.plan(); run.model_and_platform_jobs(); run.smoke()
run.decide()  # rejected, and ignored
error = ""
try:
    run.publish()
except Exception as exc:
    error = type(exc).__name__
print(json.dumps({{"debug": __debug__, "error": error, "writes": fakes.registry.writes}}))
"""


def test_the_permit_holds_with_asserts_stripped(tmp_path: Path) -> None:
    """`python -O` drops asserts; the gate must not be one."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-O", "-c", SCRIPT, str(tmp_path)], cwd=root, capture_output=True,
                         text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"debug": False, "error": "GateFailed", "writes": []}

