"""The release journal: a release cut off after its first tag write is finished by the next
run (same index digest, no second deploy), driven through the real release order with the
port fakes of tests/fakes.py."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.adapters import signals
from ci.core import config as cfg
from ci.core.config import Config
from ci.core.errors import GitOpsError, JournalError, RegistryError
from ci.pipelines import release
from ci.pipelines.handle import Release
from ci.stages import journal
from tests.fakes import DEPLOY_COMMIT, Fakes
from tests.unit.test_release_order import ENV, REPO, TAGS, TOML


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return cfg.loads(TOML, root=str(tmp_path))


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture(autouse=True)
def _no_active_journal() -> Iterator[None]:
    journal.adopt(None)
    yield
    journal.adopt(None)


def handle(config: Config, fakes: Fakes) -> Release:
    return Release(config=config, environ=ENV, ports=fakes.ports(), force=True)


def on_disk(config: Config) -> dict[str, object]:
    data = json.loads(journal.path_for(config).read_text())
    assert isinstance(data, dict)
    return data


def test_a_failed_deploy_is_finished_by_the_next_run_on_the_same_index(
        config: Config, fakes: Fakes) -> None:
    fakes.git.error = GitOpsError("push to deploy.git (main) failed: remote hung up")
    with pytest.raises(GitOpsError):
        release.pipeline(handle(config, fakes))
    first = fakes.registry.tags(REPO)
    digest = first["latest"]
    assert first == dict.fromkeys(TAGS, digest)  # the publish landed, the deploy did not
    left = on_disk(config)
    assert left["phase"] == "published" and left["index_digest"] == digest
    assert str(left["failure"]).startswith("deploy: push to deploy.git")
    assert fakes.tracking.promoted == []  # never promoted ahead of its deploy

    fakes.recorder.clear()
    run = handle(config, fakes)
    assert release.pipeline(run) == 0
    rec = fakes.recorder
    assert rec.index("deploy") < rec.index("promote") < rec.index("plan")  # before anything new
    assert fakes.git.index_refs[0].endswith(f"@{digest}")  # the journal's index, not a new one
    assert fakes.tracking.promoted[0] == ("7", DEPLOY_COMMIT)
    assert not journal.path_for(config).exists()


def test_a_failed_promote_is_finished_without_a_second_deploy(
        config: Config, fakes: Fakes) -> None:
    fakes.tracking.down.add("promote")
    with pytest.raises(Exception, match="does not answer"):
        release.pipeline(handle(config, fakes))
    assert on_disk(config)["phase"] == "deployed"
    assert len(fakes.git.real_deploys) == 1

    fakes.tracking.down.clear()
    from ci.stages.resume import resume

    found = journal.load(config)
    assert found is not None
    said = resume(config, found, client=fakes.registry, git=fakes.git, tracking=fakes.tracking,
                  source_repo=None, environ=ENV)
    assert "champion → v7" in said
    assert len(fakes.git.real_deploys) == 1  # the deploy that landed is not repeated
    assert fakes.tracking.promoted == [("7", DEPLOY_COMMIT)]
    assert not journal.path_for(config).exists()


def test_a_rolled_back_publish_leaves_no_journal(config: Config, fakes: Fakes) -> None:
    fakes.registry.fail_tags.add("latest")
    with pytest.raises(RegistryError, match="no tag moved"):
        release.pipeline(handle(config, fakes))
    assert fakes.registry.tags(REPO) == {}
    assert not journal.path_for(config).exists()


def test_half_moved_tags_are_completed_and_foreign_moves_kept(
        config: Config, fakes: Fakes) -> None:
    """A crash between two tag writes (the journal says 'publishing'): the next run moves
    the rest, and leaves alone a tag another release moved in between."""
    fakes.registry.fail_tags.add("latest")
    fakes.registry.remove_tag = _refuse  # type: ignore[method-assign]  # rollback impossible
    with pytest.raises(RegistryError, match="LEFT MOVED"):
        release.pipeline(handle(config, fakes))
    left = journal.load(config)
    assert left is not None and left.phase == "publishing"
    assert set(fakes.registry.tags(REPO)) == set(TAGS) - {"latest"}
    other = fakes.registry.add_image(REPO, "linux/amd64")
    main = fakes.registry.get_manifest(REPO, other)
    fakes.registry.put_manifest(REPO, "main", main.body, main.media_type)  # a newer release

    fakes.registry.fail_tags.clear()
    from ci.stages.resume import resume

    said = resume(config, left, client=fakes.registry, git=fakes.git, tracking=fakes.tracking,
                  source_repo=None, environ=ENV)
    tags = fakes.registry.tags(REPO)
    assert tags["latest"] == tags[TAGS[0]] == left.index_digest
    assert tags["main"] == other and "main left on" in said
    (deployed,) = fakes.git.index_refs
    assert deployed.endswith(f"@{left.index_digest}")


def _refuse(repo: str, tag: str) -> None:
    raise RegistryError(f"{repo}:{tag}: DELETE not allowed")


def test_sigterm_while_tags_move_finishes_them_then_stops(config: Config, fakes: Fakes) -> None:
    """A runner's SIGTERM during the tag writes: every tag moves, the journal says so, the
    run stops before the deploy with exit 143 and the true state in one line."""
    old = signal.getsignal(signal.SIGTERM)
    signals.install()
    fakes.registry.on_tag = lambda tag: os.kill(os.getpid(), signal.SIGTERM) \
        if tag == TAGS[0] else None
    try:
        with pytest.raises(KeyboardInterrupt):
            release.pipeline(handle(config, fakes))
        assert signals.exit_code() == 143
    finally:
        signal.signal(signal.SIGTERM, old)
    digest = fakes.registry.tags(REPO)["latest"]
    assert fakes.registry.tags(REPO) == dict.fromkeys(TAGS, digest)
    assert fakes.git.real_deploys == []
    state = journal.interrupted_state()
    assert f"release {digest[:19]}" in state and "not done: deploy, promote v7" in state
    assert on_disk(config)["phase"] == "published"


def test_an_unreadable_journal_stops_the_run_before_any_work(
        config: Config, fakes: Fakes) -> None:
    path = journal.path_for(config)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(JournalError, match="unreadable"):
        release.pipeline(handle(config, fakes))
    assert fakes.recorder == [] and not fakes.moved


def test_a_journal_of_another_image_is_not_finished_here(config: Config, fakes: Fakes) -> None:
    fakes.git.error = GitOpsError("remote hung up")
    with pytest.raises(GitOpsError):
        release.pipeline(handle(config, fakes))
    other = cfg.loads(TOML.replace(REPO, "examples/other"), root=str(config.root_path))
    with pytest.raises(JournalError, match=r"not project\.image"):
        release.pipeline(handle(other, fakes))


def test_sigint_inside_a_deferred_section_waits_for_its_end() -> None:
    """Ctrl-C during the tag writes: the block finishes, then the interrupt is delivered."""
    finished: list[str] = []
    with pytest.raises(KeyboardInterrupt), signals.deferred("moving release tags"):
        os.kill(os.getpid(), signal.SIGINT)
        finished.append("all tags")
    assert finished == ["all tags"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
