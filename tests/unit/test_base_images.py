"""Base images per platform: template fields, config errors, and a missing base stopping the
plan (issue #12 item 4). Objects are built directly; no docker, no registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.adapters.bases import split_reference
from ci.core import config as cfg
from ci.core import platforms
from ci.core.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, PlanUnavailable
from ci.core.jobs import spec_for
from ci.core.plan import BaseCheck, Placement, Plan, PlatformJob, RunnerInfo, make_plan
from ci.core.results import SourceInfo
from ci.stages.prepare import prepare

TOML = """
[project]
name = "svc"
image = "127.0.0.1:5000/team/svc"
platforms = ["linux/amd64", "linux/arm/v7"]
[build]
base_image = "{template}"
"""
ALL = "{os} {arch} {variant} {arch_variant} {slug} {debian_arch}"


def load(template: str, environ: dict[str, str] | None = None) -> cfg.Config:
    return cfg.loads(TOML.replace("{template}", template), environ=environ)


@pytest.mark.parametrize(("platform", "want"), [
    ("linux/amd64", "linux amd64  amd64 linux-amd64 amd64"),
    ("linux/amd64/v3", "linux amd64 v3 amd64-v3 linux-amd64-v3 amd64"),
    ("linux/arm64", "linux arm64  arm64 linux-arm64 arm64"),
    ("linux/arm/v7", "linux arm v7 arm-v7 linux-arm-v7 armhf"),
    ("linux/arm/v6", "linux arm v6 arm-v6 linux-arm-v6 armel"),
    ("linux/arm/v5", "linux arm v5 arm-v5 linux-arm-v5 armel"),
    ("linux/386", "linux 386  386 linux-386 i386"),
    ("linux/ppc64le", "linux ppc64le  ppc64le linux-ppc64le ppc64el"),
    ("linux/s390x", "linux s390x  s390x linux-s390x s390x"),
    ("linux/riscv64", "linux riscv64  riscv64 linux-riscv64 riscv64"),
])
def test_every_field_for_every_platform(platform: str, want: str) -> None:
    assert platforms.expand(ALL, platforms.parse(platform)) == want
    assert load(ALL).build.base_for(platforms.parse(platform)) == want


def test_every_platform_maps_to_its_own_base() -> None:
    """{debian_arch} and {arch_variant} give each of these platforms its own base, where
    {arch} gives linux/arm/v6 and linux/arm/v7 the same one."""
    names = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6", "linux/386",
             "linux/ppc64le", "linux/s390x", "linux/riscv64"]
    parsed = [platforms.parse(n) for n in names]
    assert len({p.arch_variant for p in parsed}) == len(names)
    assert len({p.debian_arch for p in parsed}) == len(names)
    assert len({p.architecture for p in parsed}) == len(names) - 1


def test_arch_stays_what_it_was_for_amd64_and_arm64() -> None:
    """The wine example's `maci/python:bookworm-{arch}` names the bases setup-stack builds."""
    conf = load("maci/python:bookworm-{arch}")
    assert conf.build.base_for(platforms.parse("linux/amd64")) == "maci/python:bookworm-amd64"
    assert conf.build.base_for(platforms.parse("linux/arm64")) == "maci/python:bookworm-arm64"
    # the issue: {arch} of linux/arm/v7 is the OCI `arm`, not the Debian `armhf`
    assert conf.build.base_for(platforms.parse("linux/arm/v7")) == "maci/python:bookworm-arm"
    debian = load("maci/python:bookworm-{debian_arch}")
    assert debian.build.base_for(platforms.parse("linux/arm/v7")) == "maci/python:bookworm-armhf"


def test_the_spec_gets_the_expanded_base(tmp_path: Path) -> None:
    conf = cfg.loads(TOML.replace("{template}", "reg:5000/py:{debian_arch}"), root=str(tmp_path))
    job = PlatformJob(platform="linux/arm/v7", placement=Placement(
        kind="emulated", runner="local", engine="docker", reason="qemu"))
    spec = spec_for(conf, job, SourceInfo(), "run", "out")
    assert spec.build_args["BASE"] == "reg:5000/py:armhf"


@pytest.mark.parametrize(("template", "fragment"), [
    ("maci/python:bookworm-{cpu}", "unknown field {cpu}"),
    ("maci/python:{debianarch}", "unknown field {debianarch}"),
    ("maci/python:{}", "unknown field {}"),
    ("maci/python:{0}", "unknown field {0}"),
    ("maci/python:{arch.real}", "unknown field {arch.real}"),
    ("maci/python:{arch:>8}", "takes no format spec"),
    ("maci/python:{arch!r}", "takes no format spec or conversion"),
    ("maci/python:{arch", "bad template"),
])
def test_a_bad_field_is_a_config_error_naming_the_key_and_field(template: str,
                                                                fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(template)
    [problem] = info.value.problems
    assert problem.path == "build.base_image"
    assert fragment in problem.reason and "{debian_arch}" in problem.reason
    assert info.value.exit_code == EXIT_USAGE
    assert info.value.lines()[0].startswith("config error: ci.toml: build.base_image = ")


def test_an_env_override_is_checked_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"build\.base_image.*unknown field \{cpu\}"):
        load("x:{arch}", {"MACI_BUILD__BASE_IMAGE": "x:{cpu}"})


def test_escaped_braces_and_no_fields_are_fine() -> None:
    assert load("plain:latest").build.base_for(platforms.parse("arm64")) == "plain:latest"
    assert load("x:{{arch}}-{arch}").build.base_for(platforms.parse("arm64")) == "x:{arch}-arm64"


@pytest.mark.parametrize(("reference", "registry", "repository", "ref"), [
    ("maci/python:bookworm-arm", "registry-1.docker.io", "maci/python", "bookworm-arm"),
    ("python", "registry-1.docker.io", "library/python", "latest"),
    ("127.0.0.1:5000/base/py:3.12", "127.0.0.1:5000", "base/py", "3.12"),
    ("localhost:5000/py", "localhost:5000", "py", "latest"),
    ("ghcr.io/o/py:1@sha256:" + "a" * 64, "ghcr.io", "o/py", "sha256:" + "a" * 64),
])
def test_split_reference(reference: str, registry: str, repository: str, ref: str) -> None:
    image, tag = split_reference(reference)
    assert (image.registry, image.repository, tag) == (registry, repository, ref)


# ------------------------------------------------------------ the plan and prepare


def checked_plan(conf: cfg.Config, statuses: dict[str, str]) -> Plan:
    runner = RunnerInfo(name="local", engine="docker", reachable=True, native="linux/amd64",
                        emulates=["linux/arm/v7"], platform_source="engine")
    plan = make_plan(conf, [runner])
    return plan.with_bases({
        p: BaseCheck(reference=conf.build.base_for(platforms.parse(p)) or "", runner="local",
                     status=s, detail="not in the image store of runner local")  # type: ignore[arg-type]
        for p, s in statuses.items()})


def test_a_missing_base_fails_the_plan_with_one_line_naming_platform_and_reference() -> None:
    plan = checked_plan(load("maci/python:bookworm-{arch}"),
                        {"linux/amd64": "local", "linux/arm/v7": "missing"})
    assert not plan.ok and not plan.unavailable
    assert [j.platform for j in plan.missing_bases] == ["linux/arm/v7"]
    assert plan.problems() == [
        "linux/arm/v7: base image maci/python:bookworm-arm not found on runner local "
        "(not in the image store of runner local)"]
    dumped = plan.model_dump(mode="json")["jobs"]
    assert [(j["platform"], j["base"]["reference"], j["base"]["status"]) for j in dumped] == [
        ("linux/amd64", "maci/python:bookworm-amd64", "local"),
        ("linux/arm/v7", "maci/python:bookworm-arm", "missing")]


@pytest.mark.parametrize("status", ["local", "registry", "unchecked"])
def test_found_or_undecidable_bases_do_not_fail_the_plan(status: str) -> None:
    plan = checked_plan(load("b:{debian_arch}"), {"linux/amd64": status, "linux/arm/v7": status})
    assert plan.ok and plan.problems() == []


def test_a_plan_without_base_checks_is_unchanged() -> None:
    """Plans from a fake plan port (no base looked up) keep working as before."""
    plan = checked_plan(load("b:{arch}"), {})
    assert plan.ok and all(j.base is None for j in plan.jobs)


def test_prepare_refuses_before_any_work_with_one_line_per_problem(tmp_path: Path) -> None:
    conf = cfg.loads(TOML.replace("{template}", "maci/python:bookworm-{arch}")
                     .replace('"linux/arm/v7"]', '"linux/arm/v7", "linux/s390x"]'),
                     root=str(tmp_path))
    plan = checked_plan(conf, {"linux/arm/v7": "missing"})
    with pytest.raises(PlanUnavailable) as info:
        prepare(conf, plan=plan, environ={})
    assert info.value.exit_code == EXIT_FAILED
    lines = info.value.lines()
    assert len(lines) == 2
    assert lines[0].startswith("linux/s390x: no native linux/s390x runner")
    assert lines[1].startswith("linux/arm/v7: base image maci/python:bookworm-arm not found "
                               "on runner local (")
    assert not (tmp_path / ".maci").exists()  # nothing was started
