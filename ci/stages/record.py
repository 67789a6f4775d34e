"""The release record: what the last successful release published, and from which inputs.

A rerun whose inputs (source commit, uncommitted changes, config, model inputs, platforms,
engine) are unchanged, and whose tags and deploy commit are still in place, has nothing to
do: like a build cache, it answers from the record instead of rebuilding, retesting and
re-pushing an identical release. `ci run --force` ignores the record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from ci.adapters import proc
from ci.core.config import Config
from ci.core.data import Frozen
from ci.core.errors import CIError
from ci.core.oci import ImageRef
from ci.core.ports import RegistryPort
from ci.core.redact import redact
from ci.core.results import SourceInfo
from ci.core.verdict import Verdict

RECORD_FILE = "released.json"


class ReleaseRecord(Frozen):
    fingerprint: str
    run_id: str
    image: str
    index_digest: str
    tags: list[str]
    platforms: list[str]
    deploy_commit: str | None = None
    deploy_branch: str | None = None
    model_version: str | None = None


def _tree_state(root: Path) -> str:
    """Hash of uncommitted changes under `root` (tracked diffs + untracked file contents)."""
    h = hashlib.sha256()
    try:
        diff = proc.run(["git", "diff", "HEAD", "--binary", "--", "."], cwd=root, timeout=30)
        untracked = proc.run(["git", "ls-files", "--others", "--exclude-standard", "-z", "--", "."],
                             cwd=root, timeout=30)
    except CIError:
        return "no-git"
    h.update(diff.stdout.encode())
    for name in sorted(filter(None, untracked.stdout.split("\0"))):
        path = root / name
        h.update(name.encode())
        if path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def fingerprint(config: Config, source: SourceInfo, platforms: list[str], engine: str,
                environ: Mapping[str, str] | None = None) -> str:
    """Everything that decides what a release would contain (declared env vars included:
    the model input hash reads them from `environ`)."""
    model_hash = ""
    command: list[str] = []
    if config.model is not None:
        from ci.stages.training import model_inputs, train_argv

        model_hash = model_inputs(config, environ).digest
        command = train_argv(config)  # `python` = the training interpreter (project .venv...)
    data = {
        "sha": source.sha,
        "tree": _tree_state(config.root_path),
        "config": config.model_dump(mode="json"),
        "model": model_hash,
        "train_command": command,
        "platforms": sorted(platforms),
        "engine": engine,
    }
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def path_for(config: Config) -> Path:
    return config.state_path / RECORD_FILE


def load(config: Config) -> ReleaseRecord | None:
    try:
        return ReleaseRecord.model_validate_json(path_for(config).read_text())
    except (OSError, ValueError):
        return None


def save(config: Config, record: ReleaseRecord) -> Path:
    path = path_for(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record.model_dump_json(indent=2) + "\n")
    return path


def still_in_place(config: Config, record: ReleaseRecord, environ: Mapping[str, str],
                   client: RegistryPort) -> str:
    """'' when the recorded tags and deploy head are still what the record says, else why not."""
    repo = ImageRef.parse(config.project.image).repository
    try:
        for tag in record.tags:
            if client.resolve(repo, tag) != record.index_digest:
                return f"tag {tag} no longer points at {record.index_digest[:19]}"
    except CIError as exc:
        return f"registry: {exc.message}"
    if config.deploy is not None and record.deploy_commit:
        from ci.stages.deploy import resolve_remote

        remote = resolve_remote(config.deploy.remote, config.root_path)
        try:
            out = proc.run(["git", "ls-remote", remote, f"refs/heads/{config.deploy.branch}"],
                           timeout=30, extra_env={"GIT_TERMINAL_PROMPT": "0"})
        except CIError as exc:
            return f"deploy remote: {exc.message}"
        head = out.stdout.split()[0] if out.stdout.split() else ""
        if head != record.deploy_commit:
            return "the deploy branch moved since"
    return ""


def check(config: Config, source: SourceInfo, platforms: list[str], engine: str, *,
          force: bool, environ: Mapping[str, str],
          client: RegistryPort) -> tuple[str, ReleaseRecord | None, str]:
    """(fingerprint, the record when nothing needs doing else None, what to report)."""
    fp = fingerprint(config, source, platforms, engine, environ)
    previous = load(config)
    why = "forced" if force else ""
    if not why:
        why = "no previous release" if previous is None else (
            "inputs changed" if previous.fingerprint != fp else
            still_in_place(config, previous, environ, client))
    if why or previous is None:
        return fp, None, f"release needed: {why}"
    return fp, previous, f"up to date: {previous.index_digest[:19]} from run {previous.run_id}"


def write_verdict(config: Config, run_dir: Path, verdict: Verdict) -> Path:
    """The verdict as JSON, secrets masked, in the run's folder and as the state dir's latest."""
    text = redact(json.dumps(verdict.model_dump(mode="json"), indent=2)) + "\n"
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "verdict.json"
    path.write_text(text)
    (config.state_path / "verdict.json").write_text(text)
    return path
