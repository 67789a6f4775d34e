"""GitOps deploy (adapter): commit the index digest and model version to the branch Argo CD syncs.

Clone the deploy remote, edit the manifests (`ci.manifests`), commit, push. A rejected push
means someone else moved the branch: fetch, reset onto the new head, reapply the edits from
scratch and push again (bounded, short backoff) — never force. Every git call goes through
`ci.proc.run`; credentials in the remote URL are registered with `ci.redact`.

The monotonic guard lives ON the deploy branch, in `.maci/deployed.json`, committed together
with the manifests, so it moves atomically with what Argo CD deploys and every clone sees it.
Only git ancestry in the source checkout decides (the true order, immune to clock skew,
rebases and commits made in the same second): a descendant of the deployed commit (or that
commit itself) deploys; an ancestor, diverged history or a commit the checkout does not hold
(shallow CI clone) is refused, naming both commits, rather than risk a rollback. Commit times
are recorded, never used to decide.

With `deploy.verify` (on by default with [sign]) the index's signature is checked first
(`ci.stages.sign.verify_index`: signed by the configured key or identity, for this source
commit); a refusal (VerificationFailed, exit 1) happens before anything is cloned or committed.

The clone lives under the state dir (`<state_dir>/tmp/deploy-<pid>-<start>-<random>`) and is
removed on every exit path; one a SIGKILLed ci left is removed by the next deploy.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ci.adapters import proc, scratch
from ci.core import redact
from ci.core.config import Config, DeployConfig
from ci.core.errors import DeployRefused, GitOpsError, StepFailed, UsageError
from ci.core.manifests import Change, Target, split_ref, update_manifest
from ci.core.outcome import DeployResult, PublishResult
from ci.core.results import SourceInfo
from ci.stages import ordering, sign
from ci.stages.ordering import Relation

log = logging.getLogger(__name__)
GUARD_FILE = ".maci/deployed.json"
CLONE_PREFIX = "deploy-"
GIT_TIMEOUT = 300.0
EventHook = Callable[[str, int], None]
# the digest of the release's preflight (a dry run before publish): nothing is signed yet
PREFLIGHT_DIGEST = "sha256:" + "0" * 64


@dataclass(frozen=True)
class Deployed:
    """The guard record: which source commit the deploy branch currently carries."""

    source_sha: str
    source_time: int | None
    sequence: int
    index_digest: str = ""
    model_version: str | None = None
    run_url: str = ""

    @classmethod
    def parse(cls, text: str) -> Deployed:
        try:
            data = json.loads(text)
            if not re.fullmatch(r"[0-9a-f]{7,64}", str(data["source_sha"])):
                raise ValueError(f"source_sha {data['source_sha']!r} is not a commit id")
            return cls(str(data["source_sha"]), data.get("source_time"), int(data["sequence"]),
                       data.get("index_digest", ""), data.get("model_version"), data.get("run_url", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise GitOpsError(f"{GUARD_FILE} on the deploy branch is unreadable: {exc}") from None


class _Rejected(Exception):
    """The remote refused the push (moved branch, hook, lock race): retry on the new head."""


def check_order(previous: Deployed | None, sha: str, relation: Relation, why: str = "") -> None:
    """Raise DeployRefused unless `sha` is the deployed commit or a descendant of it (pure;
    `why` says why the relation is unknown). No commit-time tie-breaker: see module doc."""
    if previous is None or relation in ("same", "descendant") or previous.source_sha == sha:
        return
    old, new = previous.source_sha, sha
    if relation == "ancestor":
        raise DeployRefused(f"source commit {new[:12]} is older than the deployed {old[:12]} "
                            f"(an ancestor of it): refusing to roll back ({new} < {old})")
    if relation == "diverged":
        raise DeployRefused(
            f"source commit {new} and the deployed {old} have diverged (neither contains "
            "the other): refusing, the order is undecidable; merge or rebase onto the "
            "deployed commit and release that")
    raise DeployRefused(
        f"cannot tell whether source commit {new} is newer than the deployed {old}: "
        f"{why or 'no source checkout holds both'}; refusing (deploy from a checkout with "
        "the history of both, e.g. `git fetch --unshallow`)")


def display_remote(remote: str) -> str:
    """The remote without credentials: `https://user:token@host/x` → `https://host/x`."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", remote)


def resolve_remote(remote: str, root: Path) -> str:
    """URLs and scp-style `host:path` stay; a local path is taken relative to the config root."""
    if "://" in remote or re.match(r"^[^/]+:", remote):
        match = re.match(r"^[a-z][a-z0-9+.-]*://([^/@]*)@", remote)
        if match:  # userinfo is a secret (a token as user or user:password)
            redact.register(match.group(1))
            redact.register(match.group(1).partition(":")[2])
        return remote
    return str((root / remote).resolve())


class _Git:
    """git in one work tree, with a fixed identity and no prompts; failures become GitOpsError."""

    def __init__(self, cwd: Path, author: str, environ: Mapping[str, str]) -> None:
        match = re.match(r"^\s*(.*?)\s*<([^>]*)>\s*$", author)
        name, email = (match.group(1), match.group(2)) if match else (author.strip(), "")
        name, email = name or "multiarch-ci", email or "ci@localhost"
        self.cwd = cwd
        self.env = {**environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
                    "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                    "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
        self.env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> proc.Result:
        try:
            result = proc.run(["git", "-c", "commit.gpgsign=false", *args], cwd=self.cwd, env=self.env,
                              input=input, timeout=GIT_TIMEOUT, check=False, step=f"git {args[0]}")
        except StepFailed as exc:  # a timeout: the remote hangs
            raise GitOpsError(redact.redact(exc.message)) from None
        if check and not result.ok:
            raise GitOpsError(f"git {args[0]} failed (exit {result.returncode}): {_last(result)}")
        return result


def _last(result: proc.Result) -> str:
    lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return redact.redact((fatal or lines or ["no output"])[-1].strip())


def _source_order(source_repo: Path | None, sha: str, previous: Deployed | None,
                  environ: Mapping[str, str]) -> tuple[int | None, Relation, str]:
    """(committer time of `sha`, for the record; its relation to the deployed commit; why
    the relation is unknown) from the source checkout, by ancestry alone (`ordering`)."""
    if source_repo is None or not sha or not source_repo.is_dir():
        return None, "unknown", "no source checkout"
    shown = _Git(source_repo, "", environ)("show", "-s", "--format=%ct", f"{sha}^{{commit}}",
                                           check=False)
    time = int(shown.stdout.strip()) if shown.ok and shown.stdout.strip().isdigit() else None
    if previous is None:
        return time, "same", ""
    # no fetch here: the guard decides from the checkout it was given
    relation, why = ordering.order(source_repo, previous.source_sha, sha, environ, deepen=False)
    return time, relation, why


def commit_message(project: str, target: Target, source: SourceInfo, sequence: int) -> str:
    """Subject plus git trailers: what a reviewer (and `git log --grep`) needs to trace a deploy."""
    short = target.digest.removeprefix("sha256:")[:12]
    model = f", model {target.model_version}" if target.model_version else ""
    lines = [f"deploy {project} {source.sha[:12]}: {target.repository}@sha256:{short}{model}", "",
             f"Source-Commit: {source.sha}"]
    lines += [f"Source-Ref: {source.ref or source.branch}"] if (source.ref or source.branch) else []
    lines += [f"Index-Digest: {target.digest}", f"Image: {target.image}"]
    lines += [f"Model-Version: {target.model_version}"] if target.model_version else []
    lines += [f"Run-URL: {source.run_url}"] if source.run_url else []
    lines += [f"Deploy-Sequence: {sequence}"]
    return "\n".join(lines) + "\n"


def deploy(
    config: Config,
    source: SourceInfo,
    index_ref: str,
    model_version: str | None,
    *,
    dry_run: bool = False,
    source_repo: Path | None = None,
    environ: Mapping[str, str] | None = None,
    on_event: EventHook | None = None,
) -> DeployResult:
    """Move the deploy branch to `index_ref` (`repo[:tag]@sha256:…`) and the model version.

    `source_repo` is the checkout holding `source.sha` (for the ancestry guard); `on_event`
    hears ("cloned" | "committed" | "rejected" | "pushed", attempt) for progress reports.
    With `config.verify_deploy`, the signature is verified before the clone (not for the
    preflight's PREFLIGHT_DIGEST dry run).
    """
    if config.deploy is None:
        raise UsageError("no [deploy] section in the config: nothing to deploy to")
    if not source.sha:
        raise DeployRefused("the source commit is unknown (no git checkout, no CI sha): cannot deploy")
    repo, tag, digest = split_ref(index_ref)
    try:
        target = Target(repo, digest or "", tag, config.deploy.keep_tag, model_version)
    except ValueError as exc:
        raise UsageError(f"index reference {index_ref!r}: {exc}") from None
    env = dict(os.environ if environ is None else environ)
    if config.verify_deploy and not (dry_run and digest == PREFLIGHT_DIGEST):
        sign.verify_index(config, index_ref, source.sha, env)  # VerificationFailed: nothing cloned
    parent = config.state_path / "tmp"
    swept = sweep_clones(parent)
    # removed on every exit path, Ctrl-C/SIGTERM included; a SIGKILL leaves it for the sweep
    with scratch.owned(parent, CLONE_PREFIX.rstrip("-")) as tmp:
        run = _Run(config, config.deploy, target, source, source_repo, env, dry_run,
                   on_event or (lambda _event, _n: None), _Git(Path(tmp), config.deploy.author, env))
        done = run.go(Path(tmp) / "deploy")
    return replace(done, messages=(*swept, *done.messages)) if swept else done


def sweep_clones(parent: Path) -> list[str]:
    """Remove the deploy clones under `parent` whose owning ci process is dead (a SIGKILL
    runs no cleanup); one message (also logged) when any was removed."""
    return scratch.sweep(parent, CLONE_PREFIX.rstrip("-"), "deploy clone")


@dataclass
class _Run:
    """One deploy: clone once, then attempt (guard, edit, commit, push) until a push lands."""

    config: Config
    dc: DeployConfig
    target: Target
    source: SourceInfo
    source_repo: Path | None
    env: Mapping[str, str]
    dry_run: bool
    hook: EventHook
    git: _Git
    shown: str = ""

    def go(self, work: Path) -> DeployResult:
        import stamina

        dc, git = self.dc, self.git
        remote = resolve_remote(dc.remote, self.config.root_path)
        self.shown = display_remote(remote)
        cloned = git("clone", "-q", "--depth", "1", "--single-branch", "--branch", dc.branch, "--",
                     remote, str(work), check=False)
        if not cloned.ok:
            why = _last(cloned)
            if f"branch {dc.branch} not found" in why:
                raise GitOpsError(f"deploy branch {dc.branch!r} does not exist on {self.shown}: seed it")
            raise GitOpsError(f"cannot clone deploy remote {self.shown} ({dc.branch}): {why}")
        git.cwd = work
        self.hook("cloned", 1)
        attempts, last = 0, ""
        notes: list[str] = []
        try:
            for attempt in stamina.retry_context(on=_Rejected, attempts=dc.max_retries + 1, timeout=None,
                                                 wait_initial=0.05, wait_max=1.0, wait_jitter=0.1):
                with attempt:
                    attempts = attempt.num
                    if attempts > 1:  # someone moved the branch: start over from its new head
                        git("fetch", "-q", "--depth", "1", "origin",
                            f"+refs/heads/{dc.branch}:refs/remotes/origin/{dc.branch}")
                        git("reset", "-q", "--hard", f"refs/remotes/origin/{dc.branch}")
                    try:
                        done = self.attempt(attempts)
                        return replace(done, messages=(*notes, *done.messages))
                    except _Rejected as exc:
                        last = str(exc)
                        notes.append(f"push attempt {attempts} rejected: {last}")
                        self.hook("rejected", attempts)
                        raise
        except _Rejected:
            pass
        raise GitOpsError(f"push to {self.shown} ({dc.branch}) rejected {attempts} times, giving up: {last}")

    def edit(self) -> tuple[list[str], list[Change]]:
        """Apply the manifest edits to the work tree; (changed files, changes)."""
        files: list[str] = []
        changes: list[Change] = []
        images = 0
        for name in self.dc.manifests:
            path = self.git.cwd / name
            if not path.resolve().is_relative_to(self.git.cwd.resolve()):
                raise UsageError(f"deploy.manifests: {name!r} points outside the deploy repository")
            if not path.is_file():
                raise GitOpsError(f"the deploy branch {self.dc.branch!r} of {self.shown} has no {name}")
            edit = update_manifest(path.read_text(), self.target, file=name)  # ManifestError: a GitOpsError
            images += edit.images
            if edit.changed:
                path.write_text(edit.text)
                changes += edit.changes
                files.append(name)
        if not images:  # model args alone would deploy nothing: the manifests name another image
            names = ", ".join(self.dc.manifests)
            raise GitOpsError(f"none of {names} refers to image {self.target.repository}")
        return files, changes

    def attempt(self, n: int) -> DeployResult:
        """One try on the current head: guard, edit, commit, push (raises _Rejected to retry)."""
        git, dc, t, src = self.git, self.dc, self.target, self.source
        guard = git.cwd / GUARD_FILE
        previous = Deployed.parse(guard.read_text()) if guard.is_file() else None
        time, relation, why = _source_order(self.source_repo, src.sha, previous, self.env)
        check_order(previous, src.sha, relation, why)
        files, changes = self.edit()
        head = git("rev-parse", "HEAD").stdout.strip()
        done = previous.sequence if previous else 0
        result = DeployResult(head, dc.branch, self.shown, (), (), "", n, self.dry_run, False, done)
        if not files:  # already deployed: nothing user-visible moves
            return replace(result, messages=("manifests already at this digest",))
        record = {"source_sha": src.sha, "source_time": time, "sequence": done + 1,
                  "index_digest": t.digest, "image": t.image, "model_version": t.model_version,
                  "run_url": src.run_url, "source_ref": src.ref or src.branch,
                  "deployed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        guard.parent.mkdir(parents=True, exist_ok=True)
        guard.write_text(json.dumps(record, indent=2) + "\n")
        files.append(GUARD_FILE)
        git("add", "--", *files)
        diff = git("diff", "--cached", "--no-color", "--no-ext-diff").stdout
        result = replace(result, changed_files=tuple(files), changes=tuple(changes), diff=diff,
                         sequence=done + 1)
        if self.dry_run:
            return result
        git("commit", "-q", "--no-verify", "-F", "-",
            input=commit_message(self.config.project.name, t, src, done + 1))
        self.hook("committed", n)
        pushed = git("push", "--porcelain", "origin", f"HEAD:refs/heads/{dc.branch}", check=False)
        if not pushed.ok:
            refused = [ln for ln in pushed.stdout.splitlines() if ln.startswith("!")]
            if refused:
                raise _Rejected(redact.redact(refused[0].split("\t")[-1]))
            raise GitOpsError(f"push to {self.shown} ({dc.branch}) failed: {_last(pushed)}")
        self.hook("pushed", n)
        return replace(result, commit=git("rev-parse", "HEAD").stdout.strip(), pushed=True)


def init_remote(config: Config, seed: Path | None = None) -> bool:
    """Create the configured LOCAL deploy remote as a bare repo seeded with the manifests' folders.

    The embedded default (a bare repo under the state dir) lets a fresh machine run the whole
    release; returns False when the remote already exists or is not a local path.
    """
    if config.deploy is None:
        raise UsageError("no [deploy] section in the config")
    dc, root = config.deploy, seed or config.root_path
    remote = resolve_remote(dc.remote, config.root_path)
    if not remote.startswith("/") or Path(remote).exists():
        return False
    with tempfile.TemporaryDirectory(prefix="maci-seed-") as tmp:
        work = Path(tmp)
        for folder in sorted({Path(m).parent for m in dc.manifests}):
            if not (root / folder).is_dir():
                raise GitOpsError(f"cannot seed {remote}: {root / folder} does not exist")
            shutil.copytree(root / folder, work / folder, dirs_exist_ok=True)
        git = _Git(work, dc.author, dict(os.environ))
        git("init", "-q", "-b", dc.branch)
        git("add", "-A")
        git("commit", "-q", "--no-verify", "-m", "seed deploy manifests")
        git("init", "-q", "--bare", "-b", dc.branch, remote)
        git("push", "-q", remote, f"HEAD:refs/heads/{dc.branch}")
    return True



def index_ref(config: Config, published: PublishResult) -> str:
    """What the manifests pin: `repo@sha256:…`, or `repo:sha-…@sha256:…` with keep_tag."""
    tag = next((t for t in published.tags if t.startswith("sha-")),
               published.tags[0] if published.tags else "")
    keep = config.deploy.keep_tag if config.deploy else False
    tag_part = f":{tag}" if keep and tag else ""
    return f"{config.project.image}{tag_part}@{published.digest}"
