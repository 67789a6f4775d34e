"""The release journal: what a publish is about to change, so a cut-off release is finished.

A registry and a git remote have no transactions. Before the first tag write, the intent
(index digest and body, each tag's previous target, the deploy and promote still to do) goes
to `<state_dir>/journal.json`, written atomically; each later step records its phase. A run
killed anywhere after that (SIGKILL, a crash, MLflow down at promote, a refused push) leaves
the journal behind, and the next run completes THAT release (same index digest, no second
rollout) before anything else — see `ci.stages.resume`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Literal

from ci.core.config import Config
from ci.core.data import Frozen
from ci.core.errors import JournalError
from ci.core.oci import Manifest
from ci.core.outcome import PublishResult
from ci.core.results import SourceInfo

JOURNAL_FILE = "journal.json"
Phase = Literal["publishing", "published", "deployed", "promoted"]


class Journal(Frozen):
    """One release between its first tag write and its release record."""

    run_id: str
    image: str
    repository: str
    index_digest: str
    index_media_type: str
    index_body: str
    tags: list[str]
    previous: dict[str, str | None]  # tag → the digest it pointed at before this release
    platforms: list[str]
    manifests: dict[str, str]
    source: SourceInfo
    fingerprint: str = ""
    model_version: str | None = None
    deploy: bool = False
    phase: Phase = "publishing"
    deploy_commit: str | None = None
    deploy_branch: str | None = None
    failure: str = ""  # why the run that wrote it stopped (set on a failed deploy/promote)
    pid: int = 0
    host: str = ""

    @property
    def index(self) -> Manifest:
        return Manifest(self.index_digest, self.index_media_type, self.index_body.encode())

    def published(self) -> PublishResult:
        """What the publish of this release wrote (for the deploy's index reference)."""
        return PublishResult(image=self.image, digest=self.index_digest, tags=list(self.tags),
                             platforms=list(self.platforms), manifests=dict(self.manifests))

    def todo(self) -> list[str]:
        """What is still to be done, in order, for the one-line state report."""
        steps: list[str] = []
        if self.phase == "publishing":
            steps.append("tags")
        if self.deploy and self.phase in ("publishing", "published"):
            steps.append("deploy")
        if self.model_version and self.phase != "promoted":
            steps.append(f"promote v{self.model_version}")
        return steps

    def describe(self) -> str:
        done = {"publishing": "index pushed, tags being moved",
                "published": f"tags {', '.join(self.tags)} moved",
                "deployed": f"tags moved, deploy commit {str(self.deploy_commit)[:12]} landed",
                "promoted": "tags moved, deployed and promoted"}[self.phase]
        todo = self.todo()
        rest = f"; not done: {', '.join(todo)}" if todo else ""
        return f"release {self.index_digest[:19]} of run {self.run_id}: {done}{rest}"


_ACTIVE: dict[str, Journal | None] = {"journal": None}


def path_for(config: Config) -> Path:
    return config.state_path / JOURNAL_FILE


def load(config: Config) -> Journal | None:
    """The unfinished release of this state dir, if any (JournalError when unreadable)."""
    path = path_for(config)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"release journal {path}: {exc.strerror}") from None
    try:
        return Journal.model_validate_json(text)
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise JournalError(f"release journal {path} is unreadable ({first}); check the tags "
                           "and deploy branch by hand, then delete it") from None


def write(config: Config, journal: Journal) -> Journal:
    """Write atomically (temp file, fsync, rename): a crash leaves the old or the new one."""
    path = path_for(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = journal.model_dump_json(indent=2) + "\n"
    with open(tmp, "w") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _ACTIVE["journal"] = journal
    return journal


def begin(config: Config, *, run_id: str, image: str, repository: str, index: Manifest,
          tags: list[str], previous: dict[str, str | None], platforms: list[str],
          manifests: dict[str, str], source: SourceInfo, fingerprint: str,
          model_version: str | None) -> Journal:
    """Record the intent before the first tag write."""
    return write(config, Journal(
        run_id=run_id, image=image, repository=repository, index_digest=index.digest,
        index_media_type=index.media_type, index_body=index.body.decode(), tags=list(tags),
        previous=dict(previous), platforms=list(platforms), manifests=dict(manifests),
        source=source, fingerprint=fingerprint, model_version=model_version,
        deploy=config.deploy is not None, pid=os.getpid(), host=socket.gethostname()))


def advance(config: Config, phase: Phase, **fields: str | None) -> Journal | None:
    """Record that a step landed (no journal: nothing to do, e.g. a dry run)."""
    current = _ACTIVE["journal"]
    if current is None:
        return None
    return write(config, current.model_copy(update={"phase": phase, **fields}))


def note_failure(config: Config, reason: str) -> None:
    """Keep why the run stopped, for the next run's report."""
    current = _ACTIVE["journal"]
    if current is not None:
        with contextlib.suppress(OSError):
            write(config, current.model_copy(update={"failure": reason[:500]}))


def finish(config: Config) -> None:
    """The release is complete and recorded: drop the journal."""
    _ACTIVE["journal"] = None
    with contextlib.suppress(FileNotFoundError):
        path_for(config).unlink()


def adopt(journal: Journal | None) -> None:
    """Make a loaded journal the one later `advance()` calls update (resume)."""
    _ACTIVE["journal"] = journal


def interrupted_state() -> str:
    """The one-line true state after an interrupt, from the journal of this process."""
    current = _ACTIVE["journal"]
    if current is None:
        return "nothing was published"
    return f"{current.describe()}; the next `ci run` finishes it"
