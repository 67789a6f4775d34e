import pytest

from ci.core import platforms
from ci.core.errors import PlatformError
from ci.core.platforms import Platform


@pytest.mark.parametrize(
    "text", ["arm64", "aarch64", "linux/arm64", "linux/arm64/v8", "LINUX/AARCH64", " arm64 "]
)
def test_arm64_spellings_are_one_platform(text: str) -> None:
    assert platforms.parse(text) == Platform("linux", "arm64")
    assert str(platforms.parse(text)) == "linux/arm64"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("linux/amd64", "linux/amd64"),
        ("x86_64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("arm", "linux/arm/v7"),
        ("armhf", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/s390x", "linux/s390x"),
        ("linux/ppc64le", "linux/ppc64le"),
        ("linux/riscv64", "linux/riscv64"),
        ("i686", "linux/386"),
        ("windows/amd64", "windows/amd64"),
    ],
)
def test_canonical_forms(text: str, canonical: str) -> None:
    assert str(platforms.parse(text)) == canonical


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("linux/arm65", "unknown architecture 'arm65'"),
        ("plan9/amd64", "unknown os 'plan9'"),
        ("linux/arm/v42", "unknown variant 'v42'"),
        ("", "not a platform"),
        ("linux//arm64", "not a platform"),
        ("linux/arm64/v8/extra", "not a platform"),
    ],
)
def test_nonsense_is_rejected_with_the_reason(text: str, fragment: str) -> None:
    with pytest.raises(PlatformError, match=fragment.replace("(", r"\(")):
        platforms.parse(text)


def test_parse_many_dedupes_keeping_order_and_splits_commas() -> None:
    got = platforms.parse_many(["arm64,linux/amd64", "aarch64", "amd64"])
    assert [str(p) for p in got] == ["linux/arm64", "linux/amd64"]


def test_host_platform_from_uname() -> None:
    assert str(platforms.host("x86_64")) == "linux/amd64"
    assert str(platforms.host("aarch64")) == "linux/arm64"


def test_uname_and_qemu_names() -> None:
    arm64 = platforms.parse("linux/arm64")
    assert (arm64.uname, arm64.qemu_arch, arm64.slug) == ("aarch64", "aarch64", "linux-arm64")
    assert platforms.parse("linux/arm/v7").slug == "linux-arm-v7"


def test_runs_on_respects_variants() -> None:
    v3 = platforms.parse("linux/amd64/v3")
    amd64 = platforms.parse("linux/amd64")
    assert amd64.runs_on(v3)
    assert not platforms.parse("linux/arm64").runs_on(amd64)
    assert platforms.parse("linux/amd64/v2").runs_on(v3)
    assert not platforms.parse("linux/amd64/v4").runs_on(v3)


def test_from_engine_report() -> None:
    assert str(platforms.from_engine("linux", "x86_64")) == "linux/amd64"
    assert str(platforms.from_engine("", "aarch64")) == "linux/arm64"
