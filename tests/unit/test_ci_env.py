"""ci.adapters.ci_env: SourceInfo from GitHub/GitLab variables or a real local git checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ci.adapters.ci_env import detect, strip_credentials

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def make_repo(tmp_path: Path, branch: str = "main") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([*GIT, "init", "-q", "-b", branch, str(repo)], check=True)
    (repo / "f.txt").write_text("x")
    git(repo, "add", "f.txt")
    git(repo, "commit", "-q", "-m", "one")
    return repo


def test_local_git_branch_sha_and_remote_without_credentials(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "feature/x")
    git(repo, "remote", "add", "origin", "https://bot:s3cret-token@git.example/team/app.git")
    info = detect({"MACI_RUN_ID": "r1"}, repo)
    assert info.sha == git(repo, "rev-parse", "HEAD") and len(info.sha) == 40
    assert (info.branch, info.tag, info.provider, info.run_id) == ("feature/x", "", "local", "r1")
    assert info.ref == "refs/heads/feature/x"
    assert info.repository_url == "https://git.example/team/app.git"


def test_local_detached_head_on_a_tag(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    git(repo, "tag", "v1.2.3")
    git(repo, "tag", "alpha")
    git(repo, "checkout", "-q", "--detach", "HEAD")
    info = detect({}, repo)
    assert (info.branch, info.tag, info.ref) == ("", "v1.2.3", "refs/tags/v1.2.3")


def test_not_a_git_checkout_gives_empty_source(tmp_path: Path) -> None:
    info = detect({"GIT_CEILING_DIRECTORIES": str(tmp_path)}, tmp_path)
    assert info.sha == "" and info.provider == "local"


def test_github_push_to_branch() -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": "abc", "GITHUB_REF": "refs/heads/main",
           "GITHUB_REF_NAME": "main", "GITHUB_REF_TYPE": "branch",
           "GITHUB_REPOSITORY": "team/app", "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_ACTOR": "dev"}
    info = detect(env, Path("."))
    assert (info.provider, info.sha, info.branch, info.tag) == ("github", "abc", "main", "")
    assert info.repository_url == "https://github.com/team/app"
    assert info.run_id == "42-2"
    assert info.run_url == "https://github.com/team/app/actions/runs/42"


def test_github_tag_and_pull_request() -> None:
    tag = detect({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/tags/v2.0.0",
                  "GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v2.0.0"}, Path("."))
    assert (tag.tag, tag.branch) == ("v2.0.0", "")
    pr = detect({"GITHUB_ACTIONS": "true", "GITHUB_REF": "refs/pull/17/merge",
                 "GITHUB_HEAD_REF": "fix/bug", "GITHUB_REF_NAME": "17/merge"}, Path("."))
    assert (pr.pull_request, pr.branch) == ("17", "fix/bug")


def test_gitlab_pipeline() -> None:
    env = {"GITLAB_CI": "true", "CI_COMMIT_SHA": "def", "CI_COMMIT_BRANCH": "dev",
           "CI_PROJECT_URL": "https://gitlab.example/g/p", "CI_PIPELINE_ID": "9",
           "CI_PIPELINE_URL": "https://gitlab.example/g/p/-/pipelines/9",
           "GITLAB_USER_LOGIN": "me", "CI_MERGE_REQUEST_IID": "3"}
    info = detect(env, Path("."))
    assert (info.provider, info.sha, info.branch, info.run_id, info.pull_request) == (
        "gitlab", "def", "dev", "9", "3")
    tagged = detect({"GITLAB_CI": "true", "CI_COMMIT_TAG": "v1.0.0"}, Path("."))
    assert (tagged.tag, tagged.ref) == ("v1.0.0", "refs/tags/v1.0.0")


def test_run_id_override_wins_in_ci() -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "1", "MACI_RUN_ID": "shared"}
    assert detect(env, Path(".")).run_id == "shared"


def test_strip_credentials() -> None:
    assert strip_credentials("https://u:p@h/x") == "https://h/x"
    assert strip_credentials("git@github.com:team/app.git") == "git@github.com:team/app.git"


@pytest.mark.parametrize(("value", "arch"), [("X64", "amd64"), ("ARM64", "arm64"), ("", "")])
def test_github_runner_arch(value: str, arch: str) -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": "a" * 40, "GITHUB_REF": "refs/heads/main",
           "RUNNER_ARCH": value}
    assert detect(env, Path(".")).runner_arch == arch


def test_gitlab_merge_request_ref_and_runner_arch() -> None:
    env = {"GITLAB_CI": "true", "CI_COMMIT_SHA": "b" * 40, "CI_MERGE_REQUEST_IID": "7",
           "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "feature",
           "CI_MERGE_REQUEST_REF_PATH": "refs/merge-requests/7/head",
           "CI_RUNNER_EXECUTABLE_ARCH": "linux/arm64"}
    src = detect(env, Path("."))
    assert (src.ref, src.branch, src.pull_request, src.runner_arch) == (
        "refs/merge-requests/7/head", "feature", "7", "arm64")


@pytest.mark.parametrize(("ref", "branch", "tag"), [
    ("refs/heads/main", "main", ""), ("refs/tags/v2.0.0", "", "v2.0.0")])
def test_a_detached_checkout_takes_its_ref_from_maci_source_ref(tmp_path: Path, ref: str,
                                                               branch: str, tag: str) -> None:
    # what an Argo Workflow's git artifact leaves: the pushed commit, detached, no branch
    repo = make_repo(tmp_path)
    git(repo, "checkout", "-q", "--detach", "HEAD")
    assert detect({}, repo).branch == ""
    info = detect({"MACI_SOURCE_REF": ref}, repo)
    assert (info.branch, info.tag, info.ref) == (branch, tag, ref)


def test_a_malformed_maci_source_ref_is_ignored(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    for ref in ("main", "refs/heads/", "refs/pull/1/head"):
        assert detect({"MACI_SOURCE_REF": ref}, repo).branch == "main"
