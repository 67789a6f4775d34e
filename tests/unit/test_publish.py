"""ci.stages.publish: only a Permit publishes; every refusal is the verdict's (no registry call)."""

from __future__ import annotations

from typing import Any

import pytest

from ci.adapters.registry import RegistryClient
from ci.core.errors import GateFailed
from ci.core.results import FailureDetail, PlatformResult, SourceInfo
from ci.stages.publish import index_annotations, publish
from tests.verdicts import verdict_for

DIGEST = "sha256:" + "a" * 64
IMAGE = "127.0.0.1:9/team/app"


def result(platform: str = "linux/amd64", status: str = "passed",
           digest: str | None = DIGEST, **kw: Any) -> PlatformResult:
    base: dict[str, Any] = dict(
        project="app", image=IMAGE, platform=platform, runner="local", engine="docker",
        placement="native", status=status, digest=digest, run_id="r1",
        source=SourceInfo(sha="c0ffee", repository_url="https://git.example/app"),
    )
    base.update(kw)
    return PlatformResult(**base)


class Unreachable(RegistryClient):
    """A client whose every request fails the test: refusals must not touch the registry."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the registry was contacted")


def refuse(results: list[PlatformResult], expected: list[str]) -> str:
    """The verdict's reasons for a refused set; its permit() raises and nothing is written."""
    verdict = verdict_for(results, expected, IMAGE)
    with pytest.raises(GateFailed, match="release rejected, nothing published"):
        publish(verdict.permit(), ["latest"], {}, Unreachable("127.0.0.1:9"))
    return "; ".join(verdict.reasons)


def test_failed_platform_is_named_and_nothing_written() -> None:
    failed = result("linux/arm64", "failed", None,
                    failure=FailureDetail(step="test", message="tests failed on linux/arm64"))
    msg = refuse([result("linux/amd64"), failed], ["linux/amd64", "linux/arm64"])
    assert msg == "linux/arm64: tests failed on linux/arm64"


def test_missing_platform_is_named() -> None:
    assert refuse([result("linux/amd64")], ["linux/amd64", "linux/arm64"]) == \
        "linux/arm64: no result"


def test_passed_without_digest_is_refused() -> None:
    assert refuse([result("linux/amd64", digest=None)], ["linux/amd64"]) == \
        "linux/amd64: no digest pushed"


def test_error_result_is_refused() -> None:
    assert refuse([result("linux/amd64", "error", None)], ["linux/amd64"]) == "linux/amd64: error"


def test_unexpected_platform_is_refused() -> None:
    msg = refuse([result("linux/amd64"), result("linux/s390x")], ["linux/amd64"])
    assert msg == "linux/s390x: unexpected platform result"


@pytest.mark.parametrize(("change", "words"), [
    ({"project": "other"}, "mixed projects"),
    ({"image": "127.0.0.1:9/team/other"}, "mixed images"),
    ({"source": SourceInfo(sha="deadbeef")}, "mixed source commits"),
    ({"schema_version": 99}, "schema versions"),
    ({"platform": "linux/amd64"}, "duplicated platform(s): linux/amd64"),
])
def test_mismatched_sets_are_refused(change: dict[str, Any], words: str) -> None:
    second = result(**{"platform": "linux/arm64", **change})
    msg = refuse([result("linux/amd64"), second], ["linux/amd64", "linux/arm64"])
    assert "results do not belong to one release" in msg and words in msg


def test_aliases_count_as_one_platform() -> None:
    msg = refuse([result("linux/arm64"), result("linux/arm64/v8")], ["linux/arm64"])
    assert "duplicated platform(s): linux/arm64" in msg


def test_empty_set_is_refused() -> None:
    assert refuse([], ["linux/amd64"]) == "linux/amd64: no result"


def test_complete_set_passes_the_gate() -> None:
    assert verdict_for([result("linux/amd64"), result("aarch64")],
                       ["linux/amd64", "arm64"], IMAGE).permit().verdict.passed


def test_publish_refuses_anything_but_a_permit() -> None:
    """A bare verdict, even one claiming `passed`, is not a key: nothing is contacted."""
    fake = verdict_for([result("linux/amd64")], ["linux/amd64"], IMAGE)
    with pytest.raises(GateFailed, match="Permit"):
        publish(fake, ["latest"], {}, Unreachable("127.0.0.1:9"))  # type: ignore[arg-type]
    forged = fake.model_validate_json(fake.model_dump_json())
    with pytest.raises(GateFailed, match="not made by decide"):
        forged.permit()


def test_index_annotations_name_the_commit_never_the_run() -> None:
    """The same release gives the same index: no run id, `created` is the commit's time."""
    timed = result("linux/amd64").source.model_copy(update={"commit_time": 1767225600})
    first = [result("linux/amd64").model_copy(update={"source": timed}),
             result("linux/arm64", run_id="r2").model_copy(update={"source": timed})]
    ann = index_annotations(first)
    assert ann == {
        "org.opencontainers.image.source": "https://git.example/app",
        "org.opencontainers.image.revision": "c0ffee",
        "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
    }
    assert index_annotations([r.model_copy(update={"run_id": "other"}) for r in first]) == ann
