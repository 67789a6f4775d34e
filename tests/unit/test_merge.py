"""`ci merge`: the matrix legs' result files → the same verdict as `ci run` → publish with its
Permit, against an in-memory registry (tests/fakes.py); a refusal writes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ci.commands.merge import run_merge
from ci.core import config as cfg
from ci.core.config import Config
from ci.core.errors import GateFailed, UsageError
from ci.core.gate import GateDecision
from ci.core.model import ModelStageResult, TrainingResult
from ci.core.results import FailureDetail, PlatformResult, SourceInfo, TestSummary
from tests.fakes import FakeRegistry

AMD, ARM = "linux/amd64", "linux/arm64"
REPO = "team/wine"
IMAGE = f"127.0.0.1:5999/{REPO}"
SHA = "c0ffee0000000000000000000000000000000000"
SOURCE = SourceInfo(sha=SHA, branch="main", ref="refs/heads/main", provider="github",
                    repository_url="https://github.com/acme/wine", run_id="42-1")
TOML = f"""
[project]
name = "wine"
image = "{IMAGE}"
platforms = ["{AMD}", "{ARM}"]

[emulation]
budget_seconds = 60
"""
TAGS = [f"sha-{SHA}", "main", "latest"]


class Registries:
    """A RegistryFactory that hands out one FakeRegistry and counts how often it was asked."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.opened = 0

    def __call__(self, config: Config, environ: Mapping[str, str]) -> FakeRegistry:
        self.opened += 1
        return self.registry


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return cfg.loads(TOML, root=str(tmp_path))


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


def leg(registry: FakeRegistry, platform: str, *, status: str = "passed",
        **kw: Any) -> PlatformResult:
    """One leg's result as `ci job` reports it; a passed leg's image is in the registry."""
    passed = status == "passed"
    base: dict[str, Any] = dict(
        project="wine", image=IMAGE, platform=platform, runner=f"gha-{platform[6:]}",
        engine="docker", placement="native", status=status,
        digest=registry.add_image(REPO, platform) if passed else None,
        tests=TestSummary(total=3, passed=3 if passed else 2, failed=0 if passed else 1),
        durations={"build_test": 1.0, "test": 2.0, "build_release": 3.0},
        failure=None if passed else FailureDetail(
            step="test", message=f"tests failed on {platform} (1 failed, 0 errors of 3)"),
        source=SOURCE, run_id="42-1")
    base.update(kw)
    return PlatformResult(**base)


def write(tmp_path: Path, *results: PlatformResult) -> list[Path]:
    """Result files exactly as `ci job --output` writes them."""
    paths = []
    for r in results:
        path = tmp_path / f"result-{r.platform.replace('/', '-')}.json"
        path.write_text(r.model_dump_json(indent=2) + "\n")
        paths.append(path)
    return paths


def model_result(tmp_path: Path, *, passed: bool) -> Path:
    """What `ci train --json` prints: the ModelStageResult plus an `ok` key."""
    decision = GateDecision(
        passed=passed, candidate_run_id="run-1", alias="champion", champion_version="6",
        metrics={"accuracy": 0.93 if passed else 0.71},
        reasons=[] if passed else ["Metric accuracy value threshold check failed: 0.71 < 0.85"])
    result = ModelStageResult(
        registered_model="wine-classifier", alias="champion", tracking_uri="http://mlflow.invalid",
        training=TrainingResult(run_id="run-1", experiment_id="1", input_hash="h", reused=False),
        decision=decision, version="7" if passed else None)
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**result.model_dump(mode="json"), "ok": result.passed}))
    return path


def test_all_legs_passed_publishes_one_index_and_every_tag(
        config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """The happy path: the index holds both legs' digests and every release tag points at it."""
    amd, arm = leg(registry, AMD), leg(registry, ARM)
    opened = Registries(registry)
    results, verdict, published = run_merge(config, write(tmp_path, amd, arm), environ={},
                                            registry=opened)
    assert verdict.passed and [r.platform for r in results] == [AMD, ARM]
    assert published.tags == TAGS and published.manifests == {AMD: amd.digest, ARM: arm.digest}
    assert registry.tags(REPO) == dict.fromkeys(TAGS, published.digest)
    assert registry.index_platforms(REPO, published.digest) == [AMD, ARM]
    assert [op for op, _, _ in registry.writes] == ["put_manifest"] * 4
    assert registry.writes[0][2] == published.digest  # the index by digest before any tag
    assert opened.opened == 1 and registry.closed == 1


def test_a_passed_model_result_joins_the_verdict(
        config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """--model-result: the gate decision is recorded in the verdict that published."""
    files = write(tmp_path, leg(registry, AMD), leg(registry, ARM))
    _, verdict, _ = run_merge(config, files, model_result=model_result(tmp_path, passed=True),
                              environ={}, registry=Registries(registry))
    assert verdict.model is not None and verdict.model.candidate_version == "7"
    assert registry.tags(REPO)


def _refuse(config: Config, registry: FakeRegistry, files: list[Path],
            model: Path | None = None) -> str:
    opened = Registries(registry)
    with pytest.raises(GateFailed) as info:
        run_merge(config, files, model_result=model, environ={}, registry=opened)
    assert registry.writes == [] and registry.tags(REPO) == {}
    assert opened.opened == 0  # refused before the registry was even opened
    return info.value.message


def test_a_failed_leg_refuses_and_writes_nothing(
        config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """One failed platform is enough to keep every tag where it was."""
    files = write(tmp_path, leg(registry, AMD), leg(registry, ARM, status="failed"))
    msg = _refuse(config, registry, files)
    assert msg == f"release rejected, nothing published: {ARM}: tests failed on {ARM} " \
                  "(1 failed, 0 errors of 3)"


def test_a_missing_leg_refuses(config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """A leg that never reported (cancelled, crashed) is not a pass."""
    msg = _refuse(config, registry, write(tmp_path, leg(registry, AMD)))
    assert msg.endswith(f"{ARM}: no result")


def test_an_errored_leg_refuses(config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """An engine error (no digest) refuses like a test failure."""
    broken = leg(registry, ARM, status="error",
                 failure=FailureDetail(step="push", message="registry refused the push"))
    msg = _refuse(config, registry, write(tmp_path, leg(registry, AMD), broken))
    assert f"{ARM}: registry refused the push" in msg


def test_the_emulation_budget_refuses(
        config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """Too much qemu time fails the release even when every leg passed."""
    slow = leg(registry, ARM, placement="emulated", emulated_seconds=120.0)
    msg = _refuse(config, registry, write(tmp_path, leg(registry, AMD), slow))
    assert msg.endswith("emulation budget: 120 s emulated > 60 s")


def test_a_rejected_model_result_refuses(
        config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """Passed legs do not outvote a rejected model gate."""
    files = write(tmp_path, leg(registry, AMD), leg(registry, ARM))
    msg = _refuse(config, registry, files, model_result(tmp_path, passed=False))
    assert "model gate: Metric accuracy value threshold check failed" in msg


def test_legs_of_different_commits_are_refused(
        config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """Two legs from two pushes are not one release (checked before any write)."""
    other = leg(registry, ARM, source=SOURCE.model_copy(update={"sha": "beef" * 10}))
    msg = _refuse(config, registry, write(tmp_path, leg(registry, AMD), other))
    assert "mixed source commits" in msg


@pytest.mark.parametrize(("content", "words"), [
    (None, "No such file"),
    ("{not json", "not a platform result"),
    ('{"platform": "linux/amd64"}', "not a platform result"),
])
def test_a_bad_result_file_is_a_usage_error_naming_it(
        config: Config, registry: FakeRegistry, tmp_path: Path, content: str | None,
        words: str) -> None:
    """The user gave a wrong path or a file that is not `ci job` output: say which one."""
    bad = tmp_path / "result-bad.json"
    if content is not None:
        bad.write_text(content)
    files = [*write(tmp_path, leg(registry, AMD)), bad]
    with pytest.raises(UsageError) as info:
        run_merge(config, files, environ={}, registry=Registries(registry))
    assert str(bad) in info.value.message and words in info.value.message
    assert registry.writes == []


def test_a_bad_model_result_is_a_usage_error_naming_it(
        config: Config, registry: FakeRegistry, tmp_path: Path) -> None:
    """A --model-result that is not `ci train --json` output is refused, not ignored."""
    bad = tmp_path / "model.json"
    bad.write_text('{"passed": true}')
    files = write(tmp_path, leg(registry, AMD), leg(registry, ARM))
    with pytest.raises(UsageError, match=f"--model-result {bad}: not `ci train --json`"):
        run_merge(config, files, model_result=bad, environ={}, registry=Registries(registry))
    assert registry.writes == []


def test_no_result_files_is_a_usage_error(config: Config, registry: FakeRegistry) -> None:
    """`ci merge` with an empty glob must not publish an empty release."""
    with pytest.raises(UsageError, match="give the result files"):
        run_merge(config, [], environ={}, registry=Registries(registry))
    assert registry.writes == []
