"""Finish the release an earlier run left half done, from its journal (same index digest).

Every step is idempotent against what already landed: a tag already on the index, or moved
on by a newer release, is left alone; a deploy branch already carrying this source and digest
gives no second commit (the deploy step finds nothing to change); the alias is set again to
the same version. A deploy the guard refuses means a newer release is deployed: the old
release is superseded and its journal dropped, never forced through.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ci.core.config import Config
from ci.core.errors import CIError, DeployRefused, JournalError, RegistryError
from ci.core.ports import GitPort, RegistryPort, TrackingPort
from ci.stages import journal, record
from ci.stages.deploy import index_ref
from ci.stages.journal import Journal
from ci.stages.record import ReleaseRecord


def _finish_tags(j: Journal, client: RegistryPort) -> list[str]:
    """Move each tag still on its previous target; report the ones someone else moved."""
    if client.resolve(j.repository, j.index_digest) is None:
        client.put_manifest(j.repository, j.index_digest, j.index.body, j.index_media_type)
    said: list[str] = []
    for tag in j.tags:
        current = client.resolve(j.repository, tag)
        if current == j.index_digest:
            continue
        if current != j.previous.get(tag):
            said.append(f"{tag} left on {str(current)[:19]} (moved by another release)")
            continue
        client.put_manifest(j.repository, tag, j.index.body, j.index_media_type)
        said.append(f"moved {tag}")
    return said


def resume(config: Config, j: Journal, *, client: RegistryPort, git: GitPort,
           tracking: TrackingPort, source_repo: Path | None,
           environ: Mapping[str, str]) -> str:
    """Complete `j` step by step; returns what was done, in one line. JournalError (the
    journal is kept, the next run tries again) when a step cannot be completed now."""
    if j.image != config.project.image:
        raise JournalError(f"the unfinished release in {journal.path_for(config)} is of "
                           f"{j.image}, not project.image {config.project.image}; finish or "
                           "delete it by hand")
    journal.adopt(j)
    done: list[str] = [f"run {j.run_id} ({j.index_digest[:19]})"]
    try:
        if j.phase == "publishing":
            done += _finish_tags(j, client) or ["tags already in place"]
            j = journal.advance(config, "published") or j
        if j.deploy and config.deploy is not None and j.phase == "published":
            try:
                deployed = git.deploy(config, j.source, index_ref(config, j.published()),
                                      j.model_version, dry_run=False, source_repo=source_repo,
                                      environ=environ)
            except DeployRefused as exc:
                journal.finish(config)
                return f"{done[0]}: superseded, dropped ({exc.message})"
            done.append(f"deploy {deployed.commit[:12]}" + ("" if deployed.pushed else
                                                             " (already there)"))
            j = journal.advance(config, "deployed", deploy_commit=deployed.commit,
                                deploy_branch=deployed.branch) or j
        if j.model_version and config.model is not None and j.phase != "promoted":
            promoted = tracking.promote(config, j.model_version, j.deploy_commit or "",
                                        environ=environ)
            done.append(f"{promoted.alias} → v{j.model_version}")
            j = journal.advance(config, "promoted") or j
    except RegistryError as exc:
        raise JournalError(f"unfinished release of run {j.run_id} not finished: {exc.message}"
                           "; rerun when the registry answers") from None
    except CIError as exc:
        if isinstance(exc, JournalError):
            raise
        raise JournalError(f"unfinished release of run {j.run_id} not finished: {exc.message}"
                           "; the next run tries again") from None
    if j.fingerprint:
        record.save(config, ReleaseRecord(
            fingerprint=j.fingerprint, run_id=j.run_id, image=j.image,
            index_digest=j.index_digest, tags=list(j.tags), platforms=list(j.platforms),
            deploy_commit=j.deploy_commit, deploy_branch=j.deploy_branch,
            model_version=j.model_version))
    journal.finish(config)
    return "finished " + "; ".join(done)
