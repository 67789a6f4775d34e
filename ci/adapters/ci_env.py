"""Where the code came from: GitHub Actions, GitLab CI or a local git checkout (adapter).

The environ and the working directory are passed in; only the local fallback runs git
(through `ci.proc.run`). Credentials embedded in remote URLs are stripped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from ci.adapters import proc
from ci.core.errors import StepFailed, ToolMissing
from ci.core.results import SourceInfo

RUN_ID_ENV = "MACI_RUN_ID"
# The ref a detached checkout was made from (`refs/heads/main`, `refs/tags/v1.2.0`): an Argo
# Workflow's git artifact checks out the pushed commit, not the branch the webhook named.
SOURCE_REF_ENV = "MACI_SOURCE_REF"


def strip_credentials(url: str) -> str:
    """`https://user:token@host/x.git` → `https://host/x.git` (scp-style URLs unchanged)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url)


_GITHUB_ARCH = {"X64": "amd64", "ARM64": "arm64", "ARM": "arm", "X86": "386"}


def _arch(value: str) -> str:
    """A CI system's runner arch (`X64`, `linux/arm64`, `aarch64`) as an OCI arch, or ''."""
    from ci.core import platforms
    from ci.core.errors import PlatformError

    value = _GITHUB_ARCH.get(value.upper(), value) if value else ""
    try:
        return platforms.parse(value).architecture if value else ""
    except PlatformError:
        return ""


def from_github(env: Mapping[str, str]) -> SourceInfo:
    ref = env.get("GITHUB_REF", "")
    ref_type = env.get("GITHUB_REF_TYPE", "")
    name = env.get("GITHUB_REF_NAME", "")
    tag = ref.removeprefix("refs/tags/") if ref.startswith("refs/tags/") else ""
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ""
    if not tag and ref_type == "tag":
        tag = name
    if not branch and ref_type == "branch" and not ref.startswith("refs/pull/"):
        branch = name
    pr = ""
    m = re.match(r"^refs/pull/(\d+)/", ref)
    if m:
        pr = m.group(1)
        branch = env.get("GITHUB_HEAD_REF", "")
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repo = env.get("GITHUB_REPOSITORY", "")
    run = env.get("GITHUB_RUN_ID", "")
    attempt = env.get("GITHUB_RUN_ATTEMPT", "")
    return SourceInfo(
        sha=env.get("GITHUB_SHA", ""),
        ref=ref,
        branch=branch,
        tag=tag,
        repository_url=f"{server}/{repo}" if repo else "",
        run_id=env.get(RUN_ID_ENV) or (f"{run}-{attempt}" if run and attempt else run),
        run_url=f"{server}/{repo}/actions/runs/{run}" if repo and run else "",
        actor=env.get("GITHUB_ACTOR", ""),
        provider="github",
        pull_request=pr,
        runner_arch=_arch(env.get("RUNNER_ARCH", "")),
    )


def from_gitlab(env: Mapping[str, str]) -> SourceInfo:
    tag = env.get("CI_COMMIT_TAG", "")
    branch = env.get("CI_COMMIT_BRANCH", "") or env.get("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "")
    ref = f"refs/tags/{tag}" if tag else (f"refs/heads/{branch}" if branch else "")
    if env.get("CI_MERGE_REQUEST_REF_PATH"):  # merge-request pipelines build the MR's ref
        ref = env["CI_MERGE_REQUEST_REF_PATH"]
    return SourceInfo(
        sha=env.get("CI_COMMIT_SHA", ""),
        ref=ref,
        branch=branch,
        tag=tag,
        repository_url=strip_credentials(env.get("CI_PROJECT_URL", "")),
        run_id=env.get(RUN_ID_ENV) or env.get("CI_PIPELINE_ID", ""),
        run_url=env.get("CI_PIPELINE_URL", ""),
        actor=env.get("GITLAB_USER_LOGIN", ""),
        provider="gitlab",
        pull_request=env.get("CI_MERGE_REQUEST_IID", ""),
        runner_arch=_arch(env.get("CI_RUNNER_EXECUTABLE_ARCH", "")),
    )


def _git(args: list[str], cwd: Path, env: Mapping[str, str]) -> str:
    try:
        res = proc.run(["git", *args], cwd=cwd, env=env, check=False, timeout=15, step="git")
    except (ToolMissing, StepFailed):
        return ""
    return res.stdout.strip() if res.ok else ""


def from_git(env: Mapping[str, str], cwd: Path) -> SourceInfo:
    """A local checkout: HEAD's sha, branch (none when detached), exact tag, origin URL; the
    ref in MACI_SOURCE_REF, when set, names the branch or tag a detached checkout came from."""
    sha = _git(["rev-parse", "--verify", "-q", "HEAD"], cwd, env)
    if not sha:
        return SourceInfo(run_id=env.get(RUN_ID_ENV, ""))
    branch = _git(["symbolic-ref", "--short", "-q", "HEAD"], cwd, env)
    tags = _git(["tag", "--points-at", "HEAD"], cwd, env).split()
    tag = sorted(tags, key=lambda t: (not re.match(r"^[vV]?\d", t), t))[0] if tags else ""
    remote = _git(["config", "--get", "remote.origin.url"], cwd, env)
    ref = f"refs/heads/{branch}" if branch else (f"refs/tags/{tag}" if tag else "")
    named = env.get(SOURCE_REF_ENV, "")
    if named.startswith("refs/heads/") and len(named) > 11:
        ref, branch = named, named.removeprefix("refs/heads/")
    elif named.startswith("refs/tags/") and len(named) > 10:
        ref, branch, tag = named, "", named.removeprefix("refs/tags/")
    return SourceInfo(
        sha=sha,
        ref=ref,
        branch=branch,
        tag=tag,
        repository_url=strip_credentials(remote),
        run_id=env.get(RUN_ID_ENV, ""),
        actor=env.get("USER", ""),
        provider="local",
    )


def commit_time(sha: str, cwd: Path, env: Mapping[str, str]) -> int | None:
    """The committer time of `sha` in the checkout at cwd: every image's SOURCE_DATE_EPOCH,
    so two builds of one commit give the same digests (None outside a checkout of it)."""
    if not sha:
        return None
    text = _git(["show", "-s", "--format=%ct", sha, "--"], cwd, env)
    return int(text) if text.isdigit() else None


def detect(environ: Mapping[str, str], cwd: Path) -> SourceInfo:
    """The source of this run, from the CI system's variables or the git checkout at cwd."""
    if environ.get("GITHUB_ACTIONS") == "true":
        source = from_github(environ)
    elif environ.get("GITLAB_CI") == "true":
        source = from_gitlab(environ)
    else:
        from ci.core import platforms

        source = from_git(environ, cwd).model_copy(
            update={"runner_arch": platforms.host().architecture})
    return source.model_copy(update={"commit_time": commit_time(source.sha, cwd, environ)})
