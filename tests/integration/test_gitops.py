"""ci.stages.deploy against REAL git: a bare repo as the deploy remote, real hooks, real concurrent pushes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ci.core import redact
from ci.core.config import Config, load, loads
from ci.core.errors import ConfigError, DeployRefused, GitOpsError, UsageError
from ci.core.manifests import Target, update_manifest
from ci.core.results import SourceInfo
from ci.stages.deploy import (
    GUARD_FILE,
    Deployed,
    DeployResult,
    check_order,
    commit_message,
    deploy,
    display_remote,
    init_remote,
)
from tests.fixtures.procs import free_port, require_tool

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "manifests"
EXAMPLE_K8S = Path(__file__).parent.parent.parent / "examples" / "wine" / "k8s"
REPO = "127.0.0.1:5000/examples/wine"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
MANIFESTS = [f"k8s/{n}.yaml" for n in ("kustomization", "deployment", "rollout", "analysis-template")]
RUN_URL = "https://ci.example.test/runs/42"


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, strip: bool = True) -> str:
    full = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t", **(env or {})}
    out = subprocess.run(["git", *args], cwd=cwd, env=full, capture_output=True, text=True, check=True)
    return out.stdout.strip() if strip else out.stdout


class Remote:
    """The bare deploy remote and ways to look at it from outside."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def head(self, branch: str = "main") -> str:
        return git("--git-dir", str(self.path), "rev-parse", f"refs/heads/{branch}")

    def show(self, name: str, rev: str = "main") -> str:
        return git("--git-dir", str(self.path), "show", f"{rev}:{name}", strip=False)

    def log(self) -> list[str]:
        return git("--git-dir", str(self.path), "log", "--format=%H", "main").splitlines()

    def message(self, rev: str = "main") -> str:
        return git("--git-dir", str(self.path), "log", "-1", "--format=%an <%ae>%n%B", rev)

    def is_ancestor(self, older: str, newer: str) -> bool:
        cmd = ["git", "--git-dir", str(self.path), "merge-base", "--is-ancestor", older, newer]
        return subprocess.run(cmd).returncode == 0

    def hook(self, rejects: int) -> Path:
        """A pre-receive hook that declines the first `rejects` pushes (counting every push)."""
        counter = self.path.parent / "pushes.count"
        script = self.path / "hooks" / "pre-receive"
        script.write_text(
            "#!/bin/sh\ncat >/dev/null\n"
            f'n=$(( $(cat "{counter}" 2>/dev/null || echo 0) + 1 ))\necho "$n" > "{counter}"\n'
            f'if [ "$n" -le {rejects} ]; then echo "test hook: declining push $n" >&2; exit 1; fi\n'
        )
        script.chmod(0o755)
        return counter


class Source:
    """A real source repository: main c1 → c2 → c3 (a day apart) and a side branch from c1, later."""

    def __init__(self, path: Path) -> None:
        self.path = path
        git("init", "-q", "-b", "main", str(path))
        self.sha: dict[str, str] = {}
        for i, name in enumerate(["c1", "c2", "c3"], start=1):
            self.commit(name, f"2024-01-0{i}T00:00:00Z")
        git("checkout", "-q", "-b", "side", self.sha["c1"], cwd=path)
        self.commit("side", "2024-01-09T00:00:00Z")
        git("checkout", "-q", "main", cwd=path)

    def commit(self, name: str, date: str) -> None:
        (self.path / "file.txt").write_text(name)
        git("add", "file.txt", cwd=self.path)
        dates = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date}
        git("commit", "-q", "-m", name, cwd=self.path, env=dates)
        self.sha[name] = git("rev-parse", "HEAD", cwd=self.path)

    def info(self, name: str) -> SourceInfo:
        return SourceInfo(sha=self.sha[name], branch="main", ref="refs/heads/main", run_url=RUN_URL)


def config_text(remote: str = "deploy.git", branch: str = "main", **deploy: object) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in deploy.items())
    return (
        f'[project]\nname = "wine"\nimage = "{REPO}"\n\n[deploy]\nremote = "{remote}"\nbranch = "{branch}"\n'
        f"manifests = {json.dumps(MANIFESTS)}\nauthor = \"Deploy Bot <deploy@example.test>\"\n{extra}"
    )


def make_config(root: Path, remote: str = "deploy.git", branch: str = "main", **deploy: object) -> Config:
    return loads(config_text(remote, branch, **deploy), "ci.toml", str(root))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    require_tool("git")
    root = tmp_path / "project"
    shutil.copytree(DATA, root / "k8s")
    return root


@pytest.fixture
def config(project: Path) -> Config:
    cfg = make_config(project, max_retries=3)
    assert init_remote(cfg) is True
    return cfg


@pytest.fixture
def remote(config: Config, project: Path) -> Remote:
    return Remote(project / "deploy.git")


@pytest.fixture
def source(tmp_path: Path) -> Source:
    return Source(tmp_path / "source")


def run(config: Config, source: Source, name: str = "c2", digest: str = D1, version: str = "7",
        **kw: object) -> DeployResult:
    return deploy(config, source.info(name), f"{REPO}:sha-{name}@{digest}", version,
                  source_repo=kw.pop("source_repo", source.path), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- happy path


def test_deploy_pins_the_index_digest_keeps_comments_and_pushes(
    config: Config, remote: Remote, source: Source
) -> None:
    seed = remote.head()
    started = time.monotonic()
    result = run(config, source)
    seconds = time.monotonic() - started
    assert result.pushed and not result.dry_run and result.attempts == 1
    assert result.commit == remote.head() != seed
    assert remote.log() == [result.commit, seed]
    assert result.branch == "main" and result.remote == str(remote.path)
    assert result.changed_files == (*MANIFESTS, GUARD_FILE)
    assert result.sequence == 1
    image = f"{REPO}:sha-c2@{D1}"
    kustomization = remote.show("k8s/kustomization.yaml")
    assert f'    newTag: "sha-c2"   # replaced on deploy\n    digest: {D1}\n' in kustomization
    assert kustomization.startswith((DATA / "kustomization.yaml").read_text().split("images:")[0])
    deployment = remote.show("k8s/deployment.yaml")
    assert f'        image: "{image}"\n' in deployment
    assert "127.0.0.1:5000/examples/wine-sidecar:1.2   # must not change" in deployment
    rollout = remote.show("k8s/rollout.yaml")
    assert '            value: "7"          # the model version being rolled out' in rollout
    assert f"          image: {image}\n" in rollout
    template = remote.show("k8s/analysis-template.yaml")
    assert '      value: "7"   # default; the Rollout passes the real one' in template
    record = json.loads(remote.show(GUARD_FILE))
    assert record["source_sha"] == source.sha["c2"] and record["sequence"] == 1
    assert record["index_digest"] == D1 and record["model_version"] == "7" and record["run_url"] == RUN_URL
    assert record["source_time"] == 1704153600  # 2024-01-02T00:00:00Z, from the source checkout
    message = remote.message()
    assert message.startswith("Deploy Bot <deploy@example.test>\ndeploy wine ")
    for needle in (f"Source-Commit: {source.sha['c2']}", f"Index-Digest: {D1}", f"Image: {image}",
                   "Model-Version: 7", f"Run-URL: {RUN_URL}", "Deploy-Sequence: 1"):
        assert needle in message
    assert seconds < 10, f"a local deploy took {seconds:.2f} s"


def test_redeploying_the_same_release_is_a_no_op(config: Config, remote: Remote, source: Source) -> None:
    first = run(config, source)
    again = run(config, source)
    assert not again.pushed and again.commit == first.commit == remote.head()
    assert again.changed_files == () and again.diff == "" and again.sequence == 1
    newer = run(config, source, "c3", D2, "8")
    assert newer.pushed and newer.sequence == 2 and remote.log()[1] == first.commit


def test_dry_run_returns_the_diff_and_changes_nothing(config: Config, remote: Remote, source: Source) -> None:
    before = remote.head()
    result = run(config, source, dry_run=True)
    assert result.dry_run and not result.pushed
    assert result.commit == before == remote.head()
    assert f"+    digest: {D1}" in result.diff
    assert '-            value: "1"          # the model version being rolled out' in result.diff
    assert f"+++ b/{GUARD_FILE}" in result.diff
    assert result.changed_files == (*MANIFESTS, GUARD_FILE)
    assert "digest:" not in remote.show("k8s/kustomization.yaml")


# ---------------------------------------------------------------- rejected pushes, concurrency


def test_push_rejected_once_then_lands_on_retry(config: Config, remote: Remote, source: Source) -> None:
    counter = remote.hook(rejects=1)
    seed = remote.head()
    events: list[tuple[str, int]] = []
    result = run(config, source, on_event=lambda e, n: events.append((e, n)))
    assert counter.read_text().strip() == "2"
    assert result.pushed and result.attempts == 2
    assert ("rejected", 1) in events and ("pushed", 2) in events
    assert result.messages == ("push attempt 1 rejected: [remote rejected] (pre-receive hook declined)",)
    assert remote.log() == [result.commit, seed]
    assert f"digest: {D1}" in remote.show("k8s/kustomization.yaml")


def test_push_rejected_every_time_gives_up_and_changes_nothing(
    config: Config, remote: Remote, source: Source
) -> None:
    counter = remote.hook(rejects=100)
    seed = remote.head()
    started = time.monotonic()
    with pytest.raises(GitOpsError, match=r"rejected 4 times, giving up: .*pre-receive hook declined"):
        run(config, source)
    assert time.monotonic() - started < 15
    assert counter.read_text().strip() == "4"  # max_retries=3: 1 + 3 pushes, never forced
    assert remote.log() == [seed]


def concurrent_commit(remote: Remote, workdir: Path) -> str:
    """Another clone changes the deploy branch (replicas and a comment) and pushes."""
    other = workdir / "other"
    git("clone", "-q", str(remote.path), str(other))
    path = other / "k8s" / "deployment.yaml"
    path.write_text(path.read_text().replace("replicas: 2", "replicas: 5  # scaled by a human"))
    kust = other / "k8s" / "kustomization.yaml"
    kust.write_text(kust.read_text() + "# note added by a concurrent commit\n")
    git("commit", "-q", "-am", "scale wine to 5", cwd=other)
    git("push", "-q", "origin", "HEAD:main", cwd=other)
    return git("rev-parse", "HEAD", cwd=other)


@pytest.mark.parametrize("form", ["path", "file-url"])  # a file:// URL makes a real shallow clone
def test_a_real_concurrent_commit_is_kept_and_our_edit_reapplied(
    config: Config, remote: Remote, source: Source, tmp_path: Path, project: Path, form: str
) -> None:
    if form == "file-url":
        config = make_config(project, remote=f"file://{remote.path}")
    seed = remote.head()
    theirs: list[str] = []

    def race(event: str, attempt: int) -> None:
        if (event, attempt) == ("committed", 1):  # after our commit, before our push
            theirs.append(concurrent_commit(remote, tmp_path))

    result = run(config, source, on_event=race)
    assert result.pushed and result.attempts == 2
    assert result.messages == ("push attempt 1 rejected: [rejected] (fetch first)",)  # non-fast-forward
    assert remote.log() == [result.commit, theirs[0], seed]  # linear: both commits, nothing forced
    assert remote.is_ancestor(theirs[0], result.commit)
    deployment = remote.show("k8s/deployment.yaml")
    assert "replicas: 5  # scaled by a human" in deployment
    assert f'image: "{REPO}:sha-c2@{D1}"' in deployment
    kustomization = remote.show("k8s/kustomization.yaml")
    assert kustomization.endswith("# note added by a concurrent commit\n")
    assert f"digest: {D1}" in kustomization
    ours = git("--git-dir", str(remote.path), "diff", "--name-only", theirs[0], result.commit).split()
    assert set(ours) == {*MANIFESTS, GUARD_FILE}


def test_a_newer_deploy_landing_meanwhile_makes_ours_refused(
    config: Config, remote: Remote, source: Source
) -> None:
    landed: list[DeployResult] = []

    def race(event: str, attempt: int) -> None:
        if (event, attempt) == ("committed", 1):
            landed.append(run(config, source, "c3", D3, "9"))

    with pytest.raises(DeployRefused, match="older than the deployed"):
        run(config, source, "c2", D1, "7", on_event=race)
    assert remote.head() == landed[0].commit
    assert f"digest: {D3}" in remote.show("k8s/kustomization.yaml")


# ---------------------------------------------------------------- monotonic guard


def test_guard_refuses_an_older_source_commit_and_leaves_the_remote(
    config: Config, remote: Remote, source: Source
) -> None:
    run(config, source, "c3", D3, "9")
    head = remote.head()
    with pytest.raises(DeployRefused, match=r"commit \w{12} is older than the deployed \w{12} \(an ancestor"):
        run(config, source, "c2", D1, "7")
    with pytest.raises(DeployRefused):
        run(config, source, "c1", D1, "7", dry_run=True)
    assert remote.head() == head
    assert json.loads(remote.show(GUARD_FILE))["source_sha"] == source.sha["c3"]


def test_guard_refuses_when_the_source_checkout_cannot_order_the_commits(
    config: Config, remote: Remote, source: Source, tmp_path: Path
) -> None:
    """A shallow CI checkout holding only the new commit: its later commit time no longer
    lets it through; the refusal names both commits and why the order is unknown."""
    first = run(config, source, "c2", D2, "8")
    shallow = tmp_path / "shallow"  # a CI-style checkout: only the commit being released
    git("clone", "-q", "--depth", "1", "--branch", "side", f"file://{source.path}", str(shallow))
    with pytest.raises(DeployRefused) as err:
        run(config, source, "side", D3, "9", source_repo=shallow)  # later in time, unordered
    message = str(err.value)
    assert (f"cannot tell whether source commit {source.sha['side']} is newer than the "
            f"deployed {source.sha['c2']}") in message
    assert f"does not hold {source.sha['c2'][:12]}" in message
    assert remote.head() == first.commit


def diverged_pair(source: Source, when: str = "2024-01-05T00:00:00Z") -> tuple[str, str]:
    """Two commits on separate branches from c3, both committed in the SAME second."""
    for name in ("left", "right"):
        git("checkout", "-q", "-b", name, source.sha["c3"], cwd=source.path)
        source.commit(name, when)
    git("checkout", "-q", "main", cwd=source.path)
    return source.sha["left"], source.sha["right"]


def test_same_second_diverged_commits_are_refused(
    config: Config, remote: Remote, source: Source
) -> None:
    left, right = diverged_pair(source)
    landed = run(config, source, "left", D1, "7")
    with pytest.raises(DeployRefused) as err:
        run(config, source, "right", D2, "8")
    assert f"source commit {right} and the deployed {left} have diverged" in str(err.value)
    assert remote.head() == landed.commit
    assert json.loads(remote.show(GUARD_FILE))["source_sha"] == left


def test_same_second_descendant_deploys_and_its_ancestor_is_refused(
    config: Config, remote: Remote, source: Source
) -> None:
    when = "2024-01-05T00:00:00Z"
    source.commit("c4", when)
    source.commit("c5", when)  # a child committed in the same second as its parent
    run(config, source, "c4", D1, "7")
    newer = run(config, source, "c5", D2, "8")
    assert newer.pushed and newer.sequence == 2
    with pytest.raises(DeployRefused, match=r"older than the deployed \w{12} \(an ancestor of it\)"):
        run(config, source, "c4", D3, "9")
    assert remote.head() == newer.commit


def test_guard_without_any_source_checkout(config: Config, remote: Remote, source: Source) -> None:
    first = run(config, source, "c2", D1, "7", source_repo=None)  # nothing deployed yet: allowed
    assert first.pushed
    with pytest.raises(DeployRefused, match="cannot tell whether"):
        run(config, source, "c3", D2, "8", source_repo=None)
    with pytest.raises(DeployRefused, match="source commit is unknown"):
        deploy(config, SourceInfo(), f"{REPO}@{D1}", "7")
    assert remote.head() == first.commit


@pytest.mark.parametrize(
    ("relation", "refused"),
    [("descendant", False), ("same", False), ("ancestor", True), ("diverged", True),
     ("unknown", True)],
)
def test_check_order_table(relation: str, refused: bool) -> None:
    previous = Deployed("a" * 40, 100, 3)
    if refused:
        with pytest.raises(DeployRefused, match="a" * 40):  # names the deployed commit in full
            check_order(previous, "b" * 40, relation)  # type: ignore[arg-type]
    else:
        check_order(previous, "b" * 40, relation)  # type: ignore[arg-type]
    check_order(None, "b" * 40, "unknown")
    check_order(previous, "a" * 40, "unknown")  # the deployed commit itself: a no-op deploy


def test_a_corrupt_guard_file_is_reported(
    config: Config, remote: Remote, source: Source, tmp_path: Path
) -> None:
    other = tmp_path / "corrupt"
    git("clone", "-q", str(remote.path), str(other))
    (other / ".maci").mkdir()
    (other / GUARD_FILE).write_text("{not json")
    git("add", "-A", cwd=other)
    git("commit", "-q", "-m", "oops", cwd=other)
    git("push", "-q", "origin", "HEAD:main", cwd=other)
    with pytest.raises(GitOpsError, match=r"\.maci/deployed\.json on the deploy branch is unreadable"):
        run(config, source)


# ---------------------------------------------------------------- the temporary clone

# a deploy that stops right after its clone (on_event "cloned"), in a process of its own
CHILD = """
import sys, time
from pathlib import Path
from ci.adapters import signals
from ci.core.config import load
from ci.core.results import SourceInfo
from ci.stages.deploy import deploy
signals.install()  # SIGTERM like Ctrl-C, as the CLI does
root, sha, src, ref = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
def hold(event, attempt):
    if event == "cloned":
        print("cloned", flush=True)
        time.sleep(120)
deploy(load(root / "ci.toml", {}, root), SourceInfo(sha=sha, branch="main"), ref, "7",
       source_repo=src, on_event=hold)
"""


def clones(project: Path) -> list[str]:
    folder = project / ".maci" / "tmp"
    return sorted(p.name for p in folder.glob("deploy-*")) if folder.is_dir() else []


def deploy_until_cloned(project: Path, source: Source) -> subprocess.Popen[str]:
    (project / "ci.toml").write_text(config_text(max_retries=3))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(project), source.sha["c2"], str(source.path),
         f"{REPO}:sha-c2@{D1}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "cloned", proc.communicate(timeout=30)[1]
    return proc


def test_the_clone_lives_in_the_state_dir_and_is_gone_after_the_deploy(
    config: Config, source: Source, project: Path
) -> None:
    seen: list[list[str]] = []

    def look(event: str, _attempt: int) -> None:
        if event == "cloned":
            seen.append(clones(project))

    result = run(config, source, on_event=look)
    assert result.pushed
    [[name]] = seen
    assert name.startswith(f"deploy-{os.getpid()}-")
    assert clones(project) == []
    with pytest.raises(DeployRefused):
        run(config, source, "c1", D2, "6")  # an ancestor: refused, and the clone still goes
    assert clones(project) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_deploy_removes_its_clone(
    config: Config, source: Source, project: Path, sig: signal.Signals
) -> None:
    proc = deploy_until_cloned(project, source)
    assert [n.split("-")[1] for n in clones(project)] == [str(proc.pid)]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in err and proc.returncode != 0
    assert clones(project) == []


def test_a_sigkilled_deploy_leaves_a_clone_the_next_deploy_removes(
    config: Config, remote: Remote, source: Source, project: Path
) -> None:
    live = project / ".maci" / "tmp" / f"deploy-{os.getpid()}-{proc_start()}-live"
    live.mkdir(parents=True)  # a clone of a LIVE deploy (this process) is never touched
    proc = deploy_until_cloned(project, source)
    [left] = [n for n in clones(project) if n != live.name]
    proc.kill()
    proc.communicate(timeout=30)
    assert (project / ".maci" / "tmp" / left).is_dir()  # SIGKILL: no cleanup ran
    started = time.monotonic()
    result = run(config, source)
    seconds = time.monotonic() - started
    assert result.pushed
    assert result.messages[0] == f"removed 1 leftover deploy clone of dead runs: {left}"
    assert clones(project) == [live.name]
    print(f"\n[measure] deploy with the sweep of a dead clone: {seconds:.2f} s")


def proc_start() -> str:
    from ci.adapters import proc

    return proc.start_time(os.getpid())


# ---------------------------------------------------------------- failures change nothing


def test_an_unreachable_remote_is_a_gitops_error_and_hides_credentials(project: Path, source: Source) -> None:
    secret = "s3cr3t-t0ken-value"
    url = f"http://deployer:{secret}@127.0.0.1:{free_port()}/deploy.git"
    cfg = make_config(project, remote=url)
    with pytest.raises(GitOpsError, match=r"cannot clone deploy remote http://127\.0\.0\.1:\d+/") as err:
        run(cfg, source)
    assert secret not in str(err.value)
    assert secret in redact.registered()
    assert display_remote(url) == url.replace(f"deployer:{secret}@", "")
    missing = make_config(project, remote=str(project / "nowhere.git"))
    with pytest.raises(GitOpsError, match="cannot clone deploy remote"):
        run(missing, source)


def test_missing_branch_manifest_or_image_reference(
    config: Config, remote: Remote, source: Source, project: Path
) -> None:
    head = remote.head()
    prod = make_config(project, branch="prod")
    with pytest.raises(GitOpsError, match="deploy branch 'prod' does not exist"):
        run(prod, source)
    extra = loads(
        f'[project]\nname = "wine"\nimage = "{REPO}"\n[deploy]\nremote = "deploy.git"\n'
        'manifests = ["k8s/kustomization.yaml", "k8s/missing.yaml"]\n', "ci.toml", str(project))
    with pytest.raises(GitOpsError, match=r"has no k8s/missing\.yaml"):
        run(extra, source)
    with pytest.raises(ConfigError, match="must stay inside the deploy repository"):
        loads(f'[project]\nname = "wine"\nimage = "{REPO}"\n[deploy]\nremote = "deploy.git"\n'
              'manifests = ["../../etc/passwd"]\n', "ci.toml", str(project))  # refused at load
    other = loads(
        '[project]\nname = "wine"\nimage = "r.example/other"\n[deploy]\nremote = "deploy.git"\n'
        'manifests = ["k8s/deployment.yaml"]\n', "ci.toml", str(project))
    with pytest.raises(GitOpsError, match=r"refers to image r\.example/other"):
        deploy(other, source.info("c2"), f"r.example/other@{D1}", "7", source_repo=source.path)
    with pytest.raises(UsageError, match="index reference"):
        deploy(config, source.info("c2"), f"{REPO}:latest", "7", source_repo=source.path)
    assert remote.head() == head


def test_init_remote_only_creates_a_missing_local_remote(config: Config, project: Path) -> None:
    assert init_remote(config) is False
    assert init_remote(make_config(project, remote="https://git.example.test/deploy.git")) is False


def test_commit_message_omits_what_is_unknown() -> None:
    target = Target(REPO, D1, "v1", model_version=None)
    message = commit_message("wine", target, SourceInfo(sha="f" * 40), 4)
    assert message.splitlines()[0] == f"deploy wine {'f' * 12}: {REPO}@sha256:{'1' * 12}"
    assert "Model-Version" not in message and "Run-URL" not in message and "Deploy-Sequence: 4" in message


# ---------------------------------------------------------------- the example's manifests


def test_example_wine_manifests_round_trip() -> None:
    files = sorted(EXAMPLE_K8S.glob("*.yaml")) if EXAMPLE_K8S.is_dir() else []
    assert files, "examples/wine/k8s has no manifests"
    target = Target(REPO, D1, "sha-abc", model_version="3")
    matched = 0
    for path in files:
        text = path.read_text()
        edit = update_manifest(text, target, file=path.name)
        matched += edit.matched
        comments = [ln.strip() for ln in text.splitlines() if ln.lstrip().startswith("#")]
        assert all(c in edit.text for c in comments), path.name
        assert update_manifest(edit.text, target, file=path.name).text == edit.text, path.name
        removed = set(text.splitlines()) - set(edit.text.splitlines())
        assert len(removed) <= len(edit.changes), path.name  # only changed values' lines differ
    assert matched > 0



def test_example_wine_config_deploys_to_its_embedded_local_remote(tmp_path: Path, source: Source) -> None:
    assert (EXAMPLE_K8S / "kustomization.yaml").is_file()
    root = tmp_path / "wine"
    shutil.copytree(EXAMPLE_K8S, root / "k8s")
    shutil.copy(EXAMPLE_K8S.parent / "ci.toml", root / "ci.toml")
    cfg = load(root / "ci.toml", {}, root)
    assert cfg.deploy is not None
    assert init_remote(cfg) is True  # the embedded default: a bare repo under the state dir
    bare = Remote(root / ".maci" / "deploy.git")
    assert bare.show("k8s/service.yaml") == (EXAMPLE_K8S / "service.yaml").read_text()
    result = deploy(cfg, source.info("c2"), f"{cfg.project.image}:sha-c2@{D1}", "5", source_repo=source.path)
    assert result.pushed and result.commit == bare.head()
    assert set(result.changed_files) == {*cfg.deploy.manifests, GUARD_FILE}
    kustomization = bare.show("k8s/kustomization.yaml")
    assert f"    newName: {cfg.project.image}\n    newTag: sha-c2\n    digest: {D1}\n" in kustomization
    assert 'value: "5"' in bare.show("k8s/rollout.yaml")
    assert bare.show("k8s/deployment.yaml") == (EXAMPLE_K8S / "deployment.yaml").read_text()
