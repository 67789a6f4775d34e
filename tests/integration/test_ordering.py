"""The monotonic tag rule on real git histories: a tag never moves back to an older source,
and when a checkout cannot tell the order, nothing moves."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ci.core.errors import GateFailed
from ci.core.jobs import LABEL_REVISION
from ci.core.oci import OCI_INDEX, Manifest, digest_of
from ci.stages.ordering import relation, tag_guard

pytestmark = pytest.mark.integration
ENV = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": "/tmp", "GIT_AUTHOR_NAME": "t",
       "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
       "GIT_COMMITTER_DATE": "2026-12-01T00:00:00Z", "GIT_AUTHOR_DATE": "2026-12-01T00:00:00Z"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, text=True,
                          capture_output=True).stdout.strip()


def commit(repo: Path, name: str) -> str:
    (repo / name).write_text(name)
    git(repo, "add", name)
    git(repo, "commit", "-qm", name)  # every commit in the same second: time cannot decide
    return git(repo, "rev-parse", "HEAD")


def index_from(sha: str) -> Manifest:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                       "annotations": {LABEL_REVISION: sha}}).encode()
    return Manifest(digest_of(body), OCI_INDEX, body)


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, str, str, str]:
    """old → new on main, and `side` diverging from old, all in one second."""
    repo = tmp_path / "src"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    old = commit(repo, "a")
    new = commit(repo, "b")
    git(repo, "checkout", "-q", "-b", "side", old)
    side = commit(repo, "c")
    return repo, old, new, side


def test_relation_is_ancestry_not_time(history: tuple[Path, str, str, str]) -> None:
    repo, old, new, side = history
    assert relation(repo, old, new, ENV) == "descendant"
    assert relation(repo, new, old, ENV) == "ancestor"
    assert relation(repo, new, side, ENV) == "diverged"
    assert relation(repo, "f" * 40, new, ENV) == "unknown"
    assert relation(None, old, new, ENV) == "unknown"


def test_a_tag_on_a_newer_source_is_kept(history: tuple[Path, str, str, str]) -> None:
    repo, old, new, _side = history
    assert tag_guard(repo, new, ENV)("main", index_from(old)) == ""  # forward: moves
    kept = tag_guard(repo, old, ENV)("main", index_from(new))  # the older run finishing late
    assert kept == f"main kept on the newer source {new[:12]}"


def test_an_undecidable_order_refuses_before_any_write(history: tuple[Path, str, str, str]
                                                      ) -> None:
    repo, _old, new, side = history
    with pytest.raises(GateFailed, match="cannot be decided \\(diverged"):
        tag_guard(repo, side, ENV)("main", index_from(new))


def test_a_shallow_clone_fetches_the_history_it_needs(
        history: tuple[Path, str, str, str], tmp_path: Path) -> None:
    repo, old, new, _side = history
    git(repo, "checkout", "-q", "main")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    assert git(shallow, "rev-parse", "--is-shallow-repository") == "true"
    assert relation(shallow, old, new, ENV) == "descendant"
