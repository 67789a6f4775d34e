"""Which of two source commits is newer, by git ancestry alone (no clock as a tie-breaker).

Two releases racing (an older commit's pipeline finishing after a newer one's) must never
move a release tag back to the older source. Commit times lie (same second, rebases, clock
skew), so only ancestry decides; when the checkout cannot tell, the caller refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from ci.adapters import proc
from ci.core.errors import CIError, GateFailed
from ci.core.jobs import LABEL_REVISION
from ci.core.oci import Manifest

Relation = Literal["same", "descendant", "ancestor", "diverged", "unknown"]
TagGuard = Callable[[str, Manifest], str]


def _git(repo: Path, environ: Mapping[str, str], *args: str) -> proc.Result | None:
    try:
        return proc.run(["git", *args], cwd=repo, env=dict(environ), check=False, timeout=60,
                        extra_env={"GIT_TERMINAL_PROMPT": "0"}, step="git")
    except CIError:
        return None


def _known(repo: Path, environ: Mapping[str, str], sha: str) -> bool:
    found = _git(repo, environ, "cat-file", "-e", f"{sha}^{{commit}}")
    return found is not None and found.ok


def _deepen_if_shallow(repo: Path, environ: Mapping[str, str]) -> None:
    """A shallow CI clone cannot see the older commit: fetch the history once (best effort)."""
    shallow = _git(repo, environ, "rev-parse", "--is-shallow-repository")
    if shallow is not None and shallow.stdout.strip() == "true":
        _git(repo, environ, "fetch", "--quiet", "--unshallow")


def order(repo: Path | None, old: str, new: str, environ: Mapping[str, str], *,
          deepen: bool = True) -> tuple[Relation, str]:
    """How `new` relates to `old` in `repo` (descendant = newer, ancestor = older, ...) and,
    when unknown, why. `deepen` un-shallows a CI clone that lacks a commit first."""
    if old == new:
        return "same", ""
    if repo is None or not repo.is_dir() or not old or not new:
        return "unknown", "no source checkout"
    if deepen and not (_known(repo, environ, old) and _known(repo, environ, new)):
        _deepen_if_shallow(repo, environ)
    forward = _git(repo, environ, "merge-base", "--is-ancestor", old, new)
    if forward is not None and forward.returncode == 0:
        return "descendant", ""
    backward = _git(repo, environ, "merge-base", "--is-ancestor", new, old)
    if backward is not None and backward.returncode == 0:
        return "ancestor", ""
    missing = [c for c in (old, new) if not _known(repo, environ, c)]
    shallow = _git(repo, environ, "rev-parse", "--is-shallow-repository")
    is_shallow = shallow is not None and shallow.stdout.strip() == "true"
    codes = (forward.returncode if forward else None, backward.returncode if backward else None)
    if codes == (1, 1) and not missing and not is_shallow:
        return "diverged", ""
    where = f"the source checkout {repo}"
    if missing:
        return "unknown", f"{where} does not hold {' nor '.join(c[:12] for c in missing)}"
    return "unknown", f"{where} is shallow, so its history cannot order them"


def relation(repo: Path | None, old: str, new: str, environ: Mapping[str, str]) -> Relation:
    """`order()` without the reason."""
    return order(repo, old, new, environ)[0]


def revision_of(manifest: Manifest) -> str:
    """The source commit an index we published says it was built from ('' if none)."""
    try:
        data = json.loads(manifest.body)
    except ValueError:
        return ""
    notes = data.get("annotations") if isinstance(data, dict) else None
    value = notes.get(LABEL_REVISION, "") if isinstance(notes, dict) else ""
    return value if isinstance(value, str) else ""


def tag_guard(repo: Path | None, sha: str, environ: Mapping[str, str]) -> TagGuard:
    """For each tag about to move: '' to move it, a reason to keep it on a newer source;
    GateFailed (nothing moved yet) when the order cannot be decided."""

    def guard(tag: str, current: Manifest) -> str:
        held = revision_of(current)
        if not held or not sha or held == sha:
            return ""  # not an index of ours, or the same source: nothing to compare
        found = relation(repo, held, sha, environ)
        if found == "descendant":
            return ""
        if found == "ancestor":
            return f"{tag} kept on the newer source {held[:12]}"
        raise GateFailed(
            f"not publishing: tag {tag} holds source {held[:12]} and whether {sha[:12]} is "
            f"newer cannot be decided ({found} history in this checkout); fetch the full "
            "history (fetch-depth: 0 / GIT_DEPTH: 0) or release from the newer commit")

    return guard
