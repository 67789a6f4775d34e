"""ci.core.tags: release tags from templates + source (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ci.core.config import PublishConfig
from ci.core.results import SourceInfo
from ci.core.tags import TAG_RE, release_tags, sanitize, semver

SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


def tags(source: SourceInfo, templates: list[str] | None = None, latest_on: str = "main",
         run_id: str = "") -> list[str]:
    pub = PublishConfig(tags=templates or ["sha-{sha}", "{branch}", "{semver}"],
                        latest_on=latest_on)
    return release_tags(pub, source, run_id)


def test_main_branch_gets_sha_branch_and_latest() -> None:
    assert tags(SourceInfo(sha=SHA, branch="main")) == [f"sha-{SHA}", "main", "latest"]


def test_other_branch_is_sanitised_and_no_latest() -> None:
    got = tags(SourceInfo(sha=SHA, branch="feature/Add wine+beer"), ["sha-{short_sha}", "{branch}"])
    assert got == ["sha-a1b2c3d", "feature-Add-wine-beer"]


def test_semver_tag_gives_full_minor_major_and_latest() -> None:
    got = tags(SourceInfo(sha=SHA, tag="v1.2.3"), ["{semver}", "sha-{short_sha}"])
    assert got == ["1.2.3", "1.2", "1", "sha-a1b2c3d", "latest"]


def test_prerelease_gets_only_itself_and_no_latest() -> None:
    assert tags(SourceInfo(sha=SHA, tag="v2.0.0-rc.1"), ["{semver}"]) == ["2.0.0-rc.1"]


def test_non_semver_tag_gives_no_semver_tags() -> None:
    assert tags(SourceInfo(sha=SHA, tag="nightly"), ["{semver}", "sha-{short_sha}"]) == [
        "sha-a1b2c3d"]


def test_templates_with_empty_fields_are_dropped() -> None:
    assert tags(SourceInfo(), ["sha-{sha}", "{branch}", "{semver}", "fixed"]) == ["fixed"]


def test_major_minor_and_run_id_fields() -> None:
    got = tags(SourceInfo(sha=SHA, tag="v3.4.5"), ["v{major}.{minor}", "run-{run_id}"],
               run_id="gh/123")
    assert got == ["v3.4", "run-gh-123", "latest"]


def test_duplicates_are_removed_in_order() -> None:
    assert tags(SourceInfo(sha=SHA, branch="latest"), ["{branch}", "latest"], latest_on="x") == [
        "latest"]


def test_semver_parse() -> None:
    v = semver("v10.0.1+build.5")
    assert v is not None and (v.major, v.minor, v.patch, v.pre, v.full) == ("10", "0", "1", "",
                                                                            "10.0.1")
    assert semver("1.2") is None and semver("v01.2.3") is None


@given(st.text(min_size=1, max_size=300))
def test_sanitize_always_gives_a_valid_tag_or_nothing(text: str) -> None:
    out = sanitize(text)
    assert out == "" or TAG_RE.match(out)


@pytest.mark.parametrize(("raw", "want"), [("a/b", "a-b"), ("..x", "x"), ("-x-", "x-"),
                                           ("a" * 200, "a" * 128)])
def test_sanitize_examples(raw: str, want: str) -> None:
    assert sanitize(raw) == want
