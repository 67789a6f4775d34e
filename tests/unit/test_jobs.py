"""ci.core.jobs: config + placed plan job → JobSpec (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.core import config as cfg
from ci.core.errors import ConfigError, PlanUnavailable
from ci.core.jobs import LABEL_PLATFORM, LABEL_REVISION, expand_base, spec_for
from ci.core.plan import Placement, PlatformJob
from ci.core.platforms import parse
from ci.core.results import SourceInfo

TOML = """
[project]
name = "wine"
image = "127.0.0.1:5000/examples/wine"
platforms = ["linux/amd64", "linux/arm64", "linux/arm/v7"]
[build]
context = "app"
dockerfile = "docker/Dockerfile"
target = "runtime"
base_image = "maci/python:bookworm-{arch}{variant}"
build_args = { PIP_INDEX = "https://pypi.org/simple" }
ca_bundle = "certs/ca.pem"
[test]
env = { A = "1" }
"""

SOURCE = SourceInfo(sha="0123456789abcdef0123", branch="main", tag="v1.4.0",
                    repository_url="https://git.example/team/wine")


def job(platform: str, kind: str = "emulated") -> PlatformJob:
    return PlatformJob(platform=platform, placement=Placement(
        kind=kind, runner="local", engine="docker", host="", reason="why"))  # type: ignore[arg-type]


def config(tmp_path: Path) -> cfg.Config:
    return cfg.loads(TOML, root=str(tmp_path))


def test_spec_expands_base_per_platform_and_makes_paths_absolute(tmp_path: Path) -> None:
    spec = spec_for(config(tmp_path), job("linux/arm/v7"), SOURCE, "run-7", ".maci/runs/run-7")
    assert spec.build_args == {"PIP_INDEX": "https://pypi.org/simple",
                               "BASE": "maci/python:bookworm-armv7"}
    assert spec.context == str((tmp_path / "app").resolve())
    assert spec.dockerfile == str((tmp_path / "app/docker/Dockerfile").resolve())
    assert spec.ca_bundle == str((tmp_path / "certs/ca.pem").resolve())
    assert spec.output_dir == str(tmp_path / ".maci/runs/run-7/linux-arm-v7")
    assert (spec.build_target, spec.test_target, spec.test_env) == ("runtime", "test", {"A": "1"})
    assert spec.placement.kind == "emulated"


def test_labels_carry_source_and_platform_never_the_run(tmp_path: Path) -> None:
    """Nothing per run in the image: two builds of one commit give the same digest."""
    source = SOURCE.model_copy(update={"commit_time": 1767323045})
    spec = spec_for(config(tmp_path), job("linux/arm64"), source, "run-7", tmp_path / "out")
    assert spec_for(config(tmp_path), job("linux/arm64"), source, "run-8",
                    tmp_path / "out").labels == spec.labels
    assert spec.labels == {
        "org.opencontainers.image.source": "https://git.example/team/wine",
        "org.opencontainers.image.revision": "0123456789abcdef0123",
        "org.opencontainers.image.created": "2026-01-02T03:04:05Z",
        "org.opencontainers.image.title": "wine",
        "org.opencontainers.image.version": "1.4.0",
        LABEL_PLATFORM: "linux/arm64",
    }


def test_empty_label_values_are_left_out(tmp_path: Path) -> None:
    spec = spec_for(config(tmp_path), job("linux/amd64", "native"), SourceInfo(), "r", "out")
    assert LABEL_REVISION not in spec.labels
    assert "org.opencontainers.image.created" not in spec.labels
    assert spec.labels[LABEL_PLATFORM] == "linux/amd64"


def test_unavailable_job_has_no_spec(tmp_path: Path) -> None:
    unavailable = PlatformJob(platform="linux/s390x",
                              placement=Placement(kind="unavailable", reason="no runner"))
    with pytest.raises(PlanUnavailable, match="linux/s390x: no runner"):
        spec_for(config(tmp_path), unavailable, SOURCE, "r", "out")


@pytest.mark.parametrize(("template", "platform", "want"), [
    ("maci/python:bookworm-{arch}", "linux/arm64", "maci/python:bookworm-arm64"),
    ("base:{os}-{arch}-{variant}", "linux/arm/v6", "base:linux-arm-v6"),
    ("plain:latest", "linux/amd64", "plain:latest"),
])
def test_expand_base(template: str, platform: str, want: str) -> None:
    assert expand_base(template, parse(platform)) == want


def test_expand_base_unknown_field_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"build.base_image"):
        expand_base("img:{cpu}", parse("linux/amd64"))
