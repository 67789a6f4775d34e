"""What a release changed in the world, as data: the published index and tags, the deploy
commit, the promoted alias, the notifications — one `ReleaseOutcome` instead of five values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from ci.core.data import Frozen
from ci.core.manifests import Change
from ci.core.model import PromoteResult


class PublishResult(Frozen):
    """What a publish wrote: the index digest, its platforms and the tags now pointing to it."""

    image: str
    digest: str
    tags: list[str]
    platforms: list[str]
    manifests: dict[str, str] = Field(description="platform → per-platform image digest")
    annotations: dict[str, str] = Field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False  # True: nothing was written; digest/tags are what WOULD be published
    kept: dict[str, str] = Field(default_factory=dict,
                                 description="tag → why it stays on a newer source's index")
    unchanged: list[str] = Field(default_factory=list,
                                 description="tags already on this index: not written again")

    @property
    def reference(self) -> str:
        return f"{self.image}@{self.digest}"


@dataclass(frozen=True)
class DeployResult:
    """What the deploy did: the head carrying the deployment, what changed, how many pushes it took."""

    commit: str
    branch: str
    remote: str
    changed_files: tuple[str, ...]
    changes: tuple[Change, ...]
    diff: str
    attempts: int
    dry_run: bool
    pushed: bool
    sequence: int
    messages: tuple[str, ...] = field(default_factory=tuple)  # rejections retried, no-op reasons


class Delivery(Frozen):
    """What happened to the event at one webhook (URL shown without credentials or query)."""

    webhook: str
    delivered: bool
    status: int | None = None
    error: str = ""
    attempts: int = 0
    seconds: float = 0.0


class NotifyReport(Frozen):
    event_id: str
    event_type: str
    deliveries: list[Delivery] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.delivered for d in self.deliveries)

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.delivered]


class ReleaseOutcome(Frozen):
    """What one release changed, in order: index + tags, deploy commit, alias, notifications.

    Each field is set by the stage that made the change and only after it succeeded; an
    empty outcome means nothing user-visible moved.
    """

    published: PublishResult | None = None
    deployed: DeployResult | None = None
    promoted: PromoteResult | None = None
    notified: NotifyReport | None = None

    def with_(self, **changes: object) -> ReleaseOutcome:
        return self.model_copy(update=changes)

    @property
    def moved(self) -> bool:
        """True once anything user-visible changed (a tag, the deploy branch, the alias)."""
        published = self.published is not None and not self.published.dry_run
        deployed = self.deployed is not None and self.deployed.pushed
        return published or deployed or self.promoted is not None

    def to_json(self) -> dict[str, Any]:
        d = self.deployed
        return {
            "published": self.published.model_dump(mode="json") if self.published else None,
            "deploy": None if d is None else {
                "commit": d.commit, "branch": d.branch, "remote": d.remote,
                "changed_files": list(d.changed_files), "attempts": d.attempts,
                "dry_run": d.dry_run, "pushed": d.pushed, "diff": d.diff if d.dry_run else "",
            },
            "promoted": self.promoted.model_dump(mode="json") if self.promoted else None,
            "notifications": self.notified.model_dump(mode="json") if self.notified else None,
        }
