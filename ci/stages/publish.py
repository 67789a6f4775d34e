"""Publish: per-platform digests → one multi-arch index → release tags, all or nothing.

Shared by `ci run`, `ci build` and `ci merge`. It takes the Permit of a passed verdict:
`decide()` alone weighed the gates (every expected platform passed with a digest, the results
belong together, model, smoke, budget), so a refusal never reaches this module. A registry has no
transactions, so the writes are ordered: the index is PUT by digest (no tag sees it),
re-read and checked to hold exactly the expected platforms, then each tag is moved; if a
tag write fails, the tags already moved are rolled back and the error names what moved.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ci.adapters import signals
from ci.core import platforms
from ci.core.attest import SLSA_V02, SPDX_PREDICATE, attestation_descriptor
from ci.core.config import Config
from ci.core.errors import AttestationError, GateFailed, RegistryError, TagMoveError, UsageError
from ci.core.jobs import LABEL_CREATED, LABEL_REVISION, LABEL_SOURCE, source_created
from ci.core.oci import (
    OCI_INDEX,
    ImageRef,
    Manifest,
    digest_of,
    platform_str,
)
from ci.core.outcome import PublishResult
from ci.core.ports import RegistryPort
from ci.core.results import PlatformResult, SourceInfo
from ci.core.tags import TAG_RE, release_tags
from ci.core.verdict import ModelVerdict, Permit, Verdict, decide
from ci.stages.attestations import read_attestations
from ci.stages.ordering import TagGuard

# the written and verified index's digest → before the first tag moves (raise: nothing moves)
BeforeTags = Callable[[str], None]
# (the index, tags about to move, each one's previous digest or None) → before the first write
Intent = Callable[[Manifest, list[str], dict[str, str | None]], None]


def build_index(
    client: RegistryPort, repo: str, digests: Mapping[str, str],
    annotations: Mapping[str, str], extra: Sequence[Mapping[str, Any]] = (),
) -> bytes:
    """OCI index bytes for {platform: digest} (+ `extra` entries: attestation manifests);
    each platform entry's platform must match its config."""
    entries = []
    for platform, digest in sorted(digests.items()):
        desc = client.descriptor(repo, digest)
        found = platform_str(desc["platform"])
        if found != str(platforms.parse(platform)):
            raise RegistryError(
                f"{repo}@{digest} was pushed for {platform} but its config says {found}"
            )
        entries.append(desc)
    entries += [dict(e) for e in extra]
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    if annotations:
        index["annotations"] = {k: v for k, v in sorted(annotations.items()) if v}
    return json.dumps(index, indent=2).encode()


def verify_index(
    client: RegistryPort, repo: str, ref: str, expected: Sequence[str]
) -> list[str]:
    """Fail unless the index at `ref` holds exactly the expected platforms."""
    found = client.index_platforms(repo, ref)  # attestation entries are not platforms
    want = sorted(str(platforms.parse(p)) for p in expected)
    if sorted(found) != want or len(set(found)) != len(found):
        raise RegistryError(f"index {repo}:{ref} holds {sorted(found)}, expected {want}")
    return found


def check_attestations(client: RegistryPort, repo: str, index: str, expected: Sequence[str]) -> None:
    """Every attested platform's SBOM and provenance are readable under the written index."""
    found = read_attestations(client, repo, index)
    for platform in expected:
        missing = [k for k in (SPDX_PREDICATE, SLSA_V02) if k not in found.get(platform, {})]
        if missing:
            raise AttestationError(f"index {repo}@{index}: {platform} lacks {', '.join(missing)}")


def move_tags(
    client: RegistryPort, repo: str, tags: Sequence[str], manifest: Manifest, *,
    guard: TagGuard | None = None, on_intent: Intent | None = None,
    kept: dict[str, str] | None = None, unchanged: list[str] | None = None,
) -> list[str]:
    """Point every tag at `manifest`; on a failure, roll back the ones already moved.
    A tag already on `manifest` is not written again (listed in `unchanged`): re-releasing
    an unchanged commit touches no tag.

    `guard` keeps a tag that holds a newer source (its reason lands in `kept`); `on_intent`
    hears every tag's previous digest before the first write (the release journal). The
    writes run with SIGINT/SIGTERM held back, so a signal never leaves half the tags moved.
    """
    before = {tag: _current(client, repo, tag) for tag in tags}
    for tag, old in before.items():
        reason = guard(tag, old) if guard is not None and old is not None else ""
        if reason and kept is not None:
            kept[tag] = reason
    same = [t for t in tags if (m := before[t]) is not None and m.digest == manifest.digest]
    if unchanged is not None:
        unchanged += same
    tags = [t for t in tags if t not in (kept or {}) and t not in same]
    if on_intent is not None:
        on_intent(manifest, tags, {t: m.digest if m else None for t, m in before.items() if t in tags})
    with signals.deferred("moving release tags"):
        return _write_tags(client, repo, tags, manifest, before)


def _write_tags(client: RegistryPort, repo: str, tags: Sequence[str], manifest: Manifest,
                before: Mapping[str, Manifest | None]) -> list[str]:
    moved: list[str] = []
    for tag in tags:
        try:
            client.put_manifest(repo, tag, manifest.body, manifest.media_type)
        except RegistryError as exc:
            rolled, stuck = _roll_back(client, repo, moved, before)
            not_moved = [t for t in tags if t not in moved]
            if not stuck:
                head = "no tag moved" + (f" (rolled back {', '.join(rolled)})" if rolled else "")
            else:
                head = f"tags LEFT MOVED to the new index: {', '.join(stuck)}"
            raise TagMoveError(
                f"{head}; failed at tag {tag!r}: {exc.message}", moved=stuck,
                rolled_back=rolled, not_moved=not_moved,
            ) from None
        moved.append(tag)
    for tag in tags:
        got = client.resolve(repo, tag)
        if got != manifest.digest:
            raise TagMoveError(f"tag {tag!r} points to {got} after writing {manifest.digest}",
                               moved=moved, rolled_back=[], not_moved=[])
    return moved


def _current(client: RegistryPort, repo: str, tag: str) -> Manifest | None:
    return client.get_manifest(repo, tag) if client.resolve(repo, tag) else None


def _roll_back(
    client: RegistryPort, repo: str, moved: list[str], before: Mapping[str, Manifest | None]
) -> tuple[list[str], list[str]]:
    """Undo moved tags: remove new ones first, then restore the old targets."""
    rolled: list[str] = []
    stuck: list[str] = []
    for tag in [t for t in moved if before.get(t) is None]:
        try:
            client.remove_tag(repo, tag)
            rolled.append(tag)
        except RegistryError:
            stuck.append(tag)
    for tag in moved:
        old = before.get(tag)
        if old is None:
            continue  # a new tag: removed above
        try:
            client.put_manifest(repo, tag, old.body, old.media_type)
            rolled.append(tag)
        except RegistryError:
            stuck.append(tag)
    return rolled, stuck


def index_annotations(results: Sequence[PlatformResult]) -> dict[str, str]:
    """OCI annotations for the index: source, revision and the commit's time. Nothing per run
    (run id, clock): the same release gives the same index digest, and `--dry-run` predicts
    it; the run is named by the verdict, the journal and the signature instead."""
    first = results[0] if results else None
    values = {
        LABEL_SOURCE: first.source.repository_url if first else "",
        LABEL_REVISION: first.source.sha if first else "",
        LABEL_CREATED: source_created(first.source) if first else "",
    }
    return {k: v for k, v in values.items() if v}


def publish(
    permit: Permit,
    tags: Sequence[str],
    annotations: dict[str, str],
    registry_client: RegistryPort,
    *,
    dry_run: bool = False,
    guard: TagGuard | None = None,
    on_intent: Intent | None = None,
    before_tags: BeforeTags | None = None,
) -> PublishResult:
    """Assemble and tag the index of a passed verdict's digests (RegistryError on a failed
    write). It takes the Permit, so the gates were weighed by `decide()` and nowhere else.

    With `dry_run` the index is assembled (reading the registry) but nothing is written: the
    result names the digest the index would have and the tags that would move.
    Each platform's attestation manifest (SBOM + provenance, pushed by its job) becomes an
    index entry, and is read back from the written index before any tag moves. `before_tags`
    (signing) runs on the written, verified index before the first tag moves: if it raises,
    no tag moved.

    Order matters: the index is written by digest (no tag sees it), re-read and checked to
    hold exactly the expected platforms, and only then are tags moved (rolled back on error).
    """
    if not isinstance(permit, Permit):
        raise GateFailed("nothing published: publish takes the Permit of a passed verdict")
    started = time.monotonic()
    verdict = permit.verdict
    image, results = verdict.image, verdict.platforms
    ref = ImageRef.parse(image)
    digests = {str(platforms.parse(r.platform)): str(r.digest) for r in results}
    attested = {str(platforms.parse(r.platform)): (str(r.digest), r.attestation)
                for r in results if r.attestation}
    extra = [attestation_descriptor(registry_client.get_manifest(ref.repository, a).body, d)
             for d, a in attested.values()]
    body = build_index(registry_client, ref.repository, digests, annotations, extra)
    if dry_run:
        return PublishResult(
            image=image, digest=digest_of(body), tags=list(tags), platforms=sorted(digests),
            manifests=digests, annotations=dict(annotations), dry_run=True,
            seconds=round(time.monotonic() - started, 3),
        )
    digest = registry_client.put_manifest(ref.repository, digest_of(body), body, OCI_INDEX)
    found = verify_index(registry_client, ref.repository, digest, list(digests))
    if attested:
        check_attestations(registry_client, ref.repository, digest, list(attested))
    if before_tags is not None:
        before_tags(digest)
    kept: dict[str, str] = {}
    unchanged: list[str] = []
    moved = move_tags(registry_client, ref.repository, list(tags),
                      Manifest(digest, OCI_INDEX, body), guard=guard, on_intent=on_intent,
                      kept=kept, unchanged=unchanged)
    return PublishResult(
        image=image,
        digest=digest,
        tags=moved,
        platforms=sorted(found),
        manifests=digests,
        annotations=dict(annotations),
        seconds=round(time.monotonic() - started, 3),
        kept=kept,
        unchanged=unchanged,
    )


def publish_release(
    permit: Permit,
    config: Config,
    client: RegistryPort,
    *,
    tags: Sequence[str] | None = None,
    dry_run: bool = False,
    guard: TagGuard | None = None,
    on_intent: Intent | None = None,
    before_tags: BeforeTags | None = None,
) -> PublishResult:
    """Publish what a passed verdict holds: its platforms' digests, its source's tags.

    Reads only the permit's verdict (never a separate list of results), so what moves is
    exactly what every gate weighed. `tags` replaces the configured release tags (e.g. a
    nightly pipeline's own); each is checked as an OCI tag before anything is written.
    """
    if not isinstance(permit, Permit):
        raise GateFailed("nothing published: publish takes the Permit of a passed verdict")
    verdict = permit.verdict
    results = verdict.platforms
    run_id = verdict.run_id or next((r.run_id for r in results if r.run_id), "")
    release = list(tags) if tags is not None else release_tags(config.publish, verdict.source,
                                                                run_id)
    bad = [t for t in release if not TAG_RE.fullmatch(t)]
    if bad or not release:
        raise UsageError(f"tags {bad or release!r}: not valid OCI tags (at least one, "
                         "[A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
    return publish(permit, release, index_annotations(results), client, dry_run=dry_run,
                   guard=guard, on_intent=on_intent, before_tags=before_tags)


def check_publishable(config: Config, only: Sequence[str] | None, do_publish: bool) -> None:
    """A release holds every configured platform: a subset may be built, never published."""
    if not do_publish or not only:
        return
    missing = [p for p in config.project.platforms if p not in {str(o) for o in only}]
    if missing:
        raise UsageError(f"--platform leaves out {', '.join(missing)} of project.platforms: "
                         "a release publishes all of them; add --no-publish to build a subset")


def decide_results(
    config: Config,
    results: Sequence[PlatformResult],
    *,
    expected: Sequence[str] | None = None,
    model: ModelVerdict | None = None,
    created: str = "",
    stage_error: str = "",
    model_required: bool = False,
    smoke_required: bool = False,
) -> Verdict:
    """The verdict of `ci build` (image only) / `ci merge` (every gate of `ci run`: model and
    smoke required when configured): the same `decide()`, from the platform results."""
    first = results[0] if results else None
    return decide(
        run_id=next((r.run_id for r in results if r.run_id), ""),
        project=first.project if first else config.project.name,
        image=config.project.image, created=created,
        source=first.source if first else SourceInfo(),
        expected_platforms=[str(platforms.parse(p))
                            for p in (expected or config.project.platforms)],
        platforms=list(results), model=model, model_required=model_required,
        smoke=[r.smoke for r in results if r.smoke is not None], smoke_required=smoke_required,
        emulation_budget_seconds=config.emulation.budget_seconds, stage_error=stage_error,
    )
