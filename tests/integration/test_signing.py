"""Signed indexes (issue #16, parts 4-5) with REAL cosign, a real registry and real git:
publish signs the index before any tag moves, a verifying deploy refuses an unsigned index,
one signed by another key, or one signed for another source commit — before it clones."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci.adapters import cosign
from ci.adapters.registry import RegistryClient
from ci.cli import main
from ci.commands.deploy import run_deploy
from ci.core import attest
from ci.core.config import Config, PublishConfig, loads
from ci.core.errors import ConfigError, SignatureError, ToolMissing, VerificationFailed
from ci.core.outcome import DeployResult
from ci.core.results import PlatformResult, SourceInfo
from ci.stages import sign
from ci.stages.attestations import attach
from ci.stages.deploy import deploy, init_remote
from ci.stages.publish import build_index, publish_release
from tests.fixtures.procs import require
from tests.fixtures.registry import FaultProxy, Registry, push_tiny_image
from tests.integration.test_gitops import Remote, Source, git
from tests.verdicts import verdict_for

pytestmark = pytest.mark.integration
PLATFORMS = ["linux/amd64", "linux/arm64"]
PASSWORD = "maci-test-" + secrets.token_hex(12)  # must never leave the child's environment
PASSWORD_ENV = "MACI_TEST_KEY_PASSWORD"


@dataclass(frozen=True)
class Keys:
    ours: Path  # folder with cosign.key + cosign.pub
    other: Path


def _cosign() -> str:
    try:
        return cosign.locate(os.environ)
    except ToolMissing:
        require(False, "cosign is not installed (scripts/install-cosign.sh)")
        raise


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    exe = _cosign()
    out = []
    for name in ("ours", "other"):
        folder = tmp_path_factory.mktemp(f"keys-{name}")
        env = {**os.environ, "COSIGN_PASSWORD": PASSWORD if name == "ours" else "other-pw"}
        subprocess.run([exe, "generate-key-pair", "--output-key-prefix", str(folder / "cosign")],
                       env=env, check=True, capture_output=True, timeout=60)
        out.append(folder)
    return Keys(*out)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without CI variables (the source comes from the git checkout)."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"GITHUB_ACTIONS", "GITLAB_CI", "COSIGN_PASSWORD", PASSWORD_ENV}}
    return {**env, **extra}


@dataclass
class Project:
    root: Path
    config: Config
    image: str
    repo: str
    remote: Remote
    source: Source

    def with_key(self, folder: Path) -> Config:
        """The same project signing and verifying with the key pair in `folder`."""
        text = (self.root / "ci.toml").read_text()
        text = text.replace(str(self.root / "keys"), str(folder))
        return loads(text, "ci.toml", str(self.root))


@pytest.fixture
def project(tmp_path: Path, registry: Registry, keys: Keys) -> Project:
    root = tmp_path / "project"
    (root / "k8s").mkdir(parents=True)
    shutil.copytree(keys.ours, root / "keys")
    repo = f"signing/{secrets.token_hex(4)}"
    image = f"{registry.host}/{repo}"
    (root / "k8s" / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n"
        f"    spec:\n      containers:\n      - name: app\n        image: {image}:seed\n")
    (root / "ci.toml").write_text(
        f'[project]\nname = "signed"\nimage = "{image}"\n\n'
        '[deploy]\nremote = "deploy.git"\nmanifests = ["k8s/deployment.yaml"]\n\n'
        f'[sign]\nkey = "{root / "keys" / "cosign.key"}"\npublic_key = "{root / "keys" / "cosign.pub"}"\n'
        f'password_env = "{PASSWORD_ENV}"\n')
    config = loads((root / "ci.toml").read_text(), "ci.toml", str(root))
    assert config.verify_deploy  # on by default with [sign]
    assert init_remote(config) is True
    return Project(root, config, image, repo, Remote(root / "deploy.git"), Source(tmp_path / "source"))


def push_index(registry: Registry, repo: str) -> str:
    """A two-platform index, pushed by digest (no tag), from tiny images over the API."""
    digests = {p: push_tiny_image(registry.url, repo, p) for p in PLATFORMS}
    client = RegistryClient(registry.host)
    try:
        body = build_index(client, repo, digests, {})
        return client.put_manifest(repo, "sha256:" + hashlib.sha256(body).hexdigest(), body,
                                   "application/vnd.oci.image.index.v1+json")
    finally:
        client.close()


def sign_it(config: Config, image: str, digest: str, sha: str) -> dict[str, str]:
    return sign.sign_index(config, image, digest, sha, "7", "sha256:" + "a" * 64, "run-1",
                           clean_env(**{PASSWORD_ENV: PASSWORD}))


def no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


# ---------------------------------------------------------------- sign and verify


def test_a_signed_index_verifies_with_its_annotations(
    project: Project, registry: Registry, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    digest = push_index(registry, project.repo)
    sha = project.source.sha["c2"]
    signed = sign_it(project.config, project.image, digest, sha)
    assert signed == {sign.SOURCE_SHA: sha, sign.MODEL_VERSION: "7",
                      sign.VERDICT_DIGEST: "sha256:" + "a" * 64, sign.RUN_ID: "run-1"}
    got = sign.verify_index(project.config, f"{project.image}:sha-c2@{digest}", sha, clean_env())
    assert {k: got[k] for k in signed} == signed
    assert registry.tags(project.repo) == [f"sha256-{digest[7:]}.sig"]  # no release tag
    no_secret(caplog.text)


def test_an_unsigned_index_is_refused(project: Project, registry: Registry) -> None:
    digest = push_index(registry, project.repo)
    with pytest.raises(VerificationFailed) as info:
        sign.verify_index(project.config, f"{project.image}@{digest}", project.source.sha["c2"],
                          clean_env())
    err = info.value
    assert err.exit_code == 1 and err.reason == cosign.NO_SIGNATURES and err.returncode != 0
    assert err.message.startswith("refusing to deploy: no signatures found: ")
    assert len(err.lines()) == 1 and "\n" not in err.message and err.stderr


def test_an_index_signed_by_another_key_is_refused(project: Project, registry: Registry, keys: Keys) -> None:
    digest = push_index(registry, project.repo)
    sha = project.source.sha["c2"]
    foreign = project.with_key(keys.other)
    sign.sign_index(foreign, project.image, digest, sha, None, "sha256:" + "b" * 64, "r",
                    clean_env(**{PASSWORD_ENV: "other-pw"}))
    assert sign.verify_index(foreign, f"{project.image}@{digest}", sha, clean_env())[sign.SOURCE_SHA] == sha
    with pytest.raises(VerificationFailed) as info:
        sign.verify_index(project.config, f"{project.image}@{digest}", sha, clean_env())
    assert info.value.reason == cosign.OTHER_SIGNER and "signed by another key" in info.value.message


def test_a_signature_for_another_source_commit_is_refused_naming_both(
    project: Project, registry: Registry,
) -> None:
    digest = push_index(registry, project.repo)
    c1, c2 = project.source.sha["c1"], project.source.sha["c2"]
    sign_it(project.config, project.image, digest, c1)
    with pytest.raises(VerificationFailed) as info:
        sign.verify_index(project.config, f"{project.image}@{digest}", c2, clean_env())
    assert info.value.reason == cosign.MISMATCH
    assert c1 in info.value.message and c2 in info.value.message


def test_a_wrong_password_is_a_signature_error_that_never_shows_it(
    project: Project, registry: Registry, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    digest = push_index(registry, project.repo)
    wrong = "wrong-" + PASSWORD  # registered as a secret too: masked wherever it would show
    with pytest.raises(SignatureError) as info:
        sign.sign_index(project.config, project.image, digest, "c0ffee", None, "", "r",
                        clean_env(**{PASSWORD_ENV: wrong}))
    err = info.value
    assert err.exit_code == 1 and err.returncode not in (0, None) and "decrypt" in err.message
    assert all(wrong not in part and PASSWORD not in part for part in err.cmd)
    no_secret(err.message, err.stdout, err.stderr, caplog.text)
    assert wrong not in err.message + err.stderr + caplog.text


def test_an_unset_password_variable_is_a_config_error_before_anything_is_written(
    project: Project, registry: Registry,
) -> None:
    verdict = verdict_for([], PLATFORMS, project.image)
    with pytest.raises(ConfigError) as info:
        sign.signer(project.config, verdict, clean_env())
    assert [p.path for p in info.value.problems] == ["sign.password_env"]


# ---------------------------------------------------------------- publish signs before tags


def results_for(project: Project, registry: Registry, sha: str) -> list[PlatformResult]:
    return [PlatformResult(project="signed", image=project.image, platform=p, runner="local",
                           engine="docker", placement="native", status="passed",
                           digest=push_tiny_image(registry.url, project.repo, p), run_id="run-9",
                           source=SourceInfo(sha=sha, branch="main")) for p in PLATFORMS]


def test_publish_signs_the_index_before_the_tags_move(project: Project, registry: Registry) -> None:
    sha = project.source.sha["c2"]
    verdict = verdict_for(results_for(project, registry, sha), PLATFORMS, project.image)
    env = clean_env(**{PASSWORD_ENV: PASSWORD})
    seen: list[list[str]] = []
    signer = sign.signer(project.config, verdict, env)
    assert signer is not None

    def before_tags(digest: str) -> None:
        signer(digest)
        seen.append(registry.tags(project.repo))  # what the registry held right after signing

    client = RegistryClient(registry.host)
    try:
        published = publish_release(verdict.permit(), project.config, client, tags=["sha-c2", "main"],
                                    before_tags=before_tags)
    finally:
        client.close()
    sig_tag = f"sha256-{published.digest[7:]}.sig"
    assert seen == [[sig_tag]]  # signed while no release tag existed
    assert registry.tags(project.repo) == sorted(["main", "sha-c2", sig_tag])
    got = sign.verify_index(project.config, f"{project.image}@{published.digest}", sha, clean_env())
    assert got[sign.VERDICT_DIGEST] == sign.verdict_digest(verdict) and got[sign.RUN_ID] == "run-9"


def test_a_signing_failure_moves_no_tag(project: Project, registry: Registry) -> None:
    verdict = verdict_for(results_for(project, registry, "c0ffee"), PLATFORMS, project.image)
    signer = sign.signer(project.config, verdict, clean_env(**{PASSWORD_ENV: "not-the-password"}))
    client = RegistryClient(registry.host)
    try:
        with pytest.raises(SignatureError):
            publish_release(verdict.permit(), project.config, client, tags=["sha-c0ffee", "main"],
                            before_tags=signer)
    finally:
        client.close()
    assert registry.tags(project.repo) == []


def test_the_verdict_digest_is_canonical_json() -> None:
    verdict = verdict_for([], PLATFORMS, "127.0.0.1:5000/x")
    again = type(verdict).model_validate_json(verdict.model_dump_json(indent=3))
    assert sign.verdict_digest(verdict) == sign.verdict_digest(again)
    doc = json.dumps(verdict.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert sign.verdict_digest(verdict) == "sha256:" + hashlib.sha256(doc.encode()).hexdigest()


# ---------------------------------------------------------------- the deploy verifies first


def deploy_c2(project: Project, config: Config, digest: str) -> DeployResult:
    src = project.source
    return deploy(config, src.info("c2"), f"{project.image}:sha-c2@{digest}", "7",
                  source_repo=src.path, environ=clean_env())


def clones(project: Project) -> list[str]:
    tmp = project.config.state_path / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def test_a_signed_index_deploys(project: Project, registry: Registry) -> None:
    digest = push_index(registry, project.repo)
    seed = project.remote.head()
    sign_it(project.config, project.image, digest, project.source.sha["c2"])
    result = deploy_c2(project, project.config, digest)
    assert result.pushed and project.remote.head() != seed
    assert digest in project.remote.show("k8s/deployment.yaml")


@pytest.mark.parametrize("how", ["unsigned", "other key", "other commit"])
def test_a_refused_index_leaves_the_deploy_branch_untouched(
    project: Project, registry: Registry, keys: Keys, how: str,
) -> None:
    digest = push_index(registry, project.repo)
    if how == "other key":
        sign.sign_index(project.with_key(keys.other), project.image, digest, project.source.sha["c2"],
                        None, "", "r", clean_env(**{PASSWORD_ENV: "other-pw"}))
    elif how == "other commit":
        sign_it(project.config, project.image, digest, project.source.sha["c1"])
    seed = project.remote.head()
    with pytest.raises(VerificationFailed) as info:
        deploy_c2(project, project.config, digest)
    assert info.value.exit_code == 1
    assert project.remote.head() == seed and project.remote.log() == [seed]
    assert clones(project) == []  # refused before the clone
    off = project.config.model_copy(update={"deploy": project.config.deploy.model_copy(  # type: ignore[union-attr]
        update={"verify": False})})
    assert deploy_c2(project, off, digest).pushed  # verify = false: not checked


def test_the_preflight_probe_is_not_verified(project: Project) -> None:
    from ci.stages.deploy import PREFLIGHT_DIGEST

    result = deploy(project.config, project.source.info("c2"), f"{project.image}@{PREFLIGHT_DIGEST}",
                    "7", dry_run=True, source_repo=project.source.path, environ=clean_env())
    assert result.dry_run and not result.pushed


def test_ci_deploy_refuses_an_unsigned_index_with_exit_1(
    project: Project, registry: Registry, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("GITHUB_ACTIONS", "GITLAB_CI"):
        monkeypatch.delenv(name, raising=False)
    git("init", "-q", "-b", "main", str(project.root))
    git("add", "ci.toml", "k8s", cwd=project.root)
    git("commit", "-q", "-m", "project", cwd=project.root)
    head = git("rev-parse", "HEAD", cwd=project.root)
    digest = push_index(registry, project.repo)
    seed = project.remote.head()
    assert main(["deploy", "--index", digest, "--config", str(project.root / "ci.toml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to deploy: no signatures found") and err.count("\n") == 1
    assert project.remote.head() == seed
    sign_it(project.config, project.image, digest, head)
    _ref, result = run_deploy(project.config, digest, None, dry_run=False, environ=clean_env())
    assert result.pushed and project.remote.head() == result.commit != seed


def test_registry_credentials_reach_cosign_through_a_private_docker_config(
    project: Project, registry: Registry, fault_proxy: FaultProxy,
) -> None:
    """publish.auth, as for our own registry client: Basic auth demanded by the proxy."""
    token = "reg-" + secrets.token_hex(8)
    fault_proxy.basic = ("ci", token)
    digest = push_index(registry, project.repo)  # straight to the registry, behind the proxy
    text = (project.root / "ci.toml").read_text().replace(registry.host, fault_proxy.host)
    text = text.replace("[sign]", '[publish]\nauth = { username = "ci", password_env = "REG_PW" }\n\n[sign]')
    config = loads(text, "ci.toml", str(project.root))
    image = f"{fault_proxy.host}/{project.repo}"
    sha = project.source.sha["c2"]
    sign.sign_index(config, image, digest, sha, None, "", "r",
                    clean_env(**{PASSWORD_ENV: PASSWORD, "REG_PW": token}))
    got = sign.verify_index(config, f"{image}@{digest}", sha, clean_env(REG_PW=token))
    assert got[sign.SOURCE_SHA] == sha
    assert [status for _, _, status in fault_proxy.requests("PUT", r"/manifests/sha256-")] == [201]
    with pytest.raises(VerificationFailed):  # no credentials: the proxy answers 401
        sign.verify_index(config.model_copy(update={"publish": PublishConfig()}),
                          f"{image}@{digest}", sha, clean_env())


def push_attested_index(registry: Registry, repo: str, commit: str) -> str:
    """A two-platform index whose SLSA provenance (attached like a platform job does) names
    `commit` as its source."""
    digests = {p: push_tiny_image(registry.url, repo, p) for p in PLATFORMS}
    client = RegistryClient(registry.host)
    try:
        statements = {p: [attest.statement(attest.SLSA_V02, attest.slsa_provenance(
            builder_id="test", repo_url="https://git.example/app", commit=commit,
            dockerfile="Dockerfile", platform=p), f"pkg:docker/{repo}@1", d)]
            for p, d in digests.items()}
        extra = attach(client, repo, digests, statements)
        body = build_index(client, repo, digests, {}, extra)
        return client.put_manifest(repo, "sha256:" + hashlib.sha256(body).hexdigest(), body,
                                   "application/vnd.oci.image.index.v1+json")
    finally:
        client.close()


def test_a_signed_index_whose_provenance_names_another_commit_is_refused(
    project: Project, registry: Registry,
) -> None:
    """The signature says c2, the provenance of the images says c1: an index re-assembled
    around another build and signed anyway is refused (and a matching one passes)."""
    c1, c2 = project.source.sha["c1"], project.source.sha["c2"]
    other = push_attested_index(registry, project.repo, c1)
    sign_it(project.config, project.image, other, c2)
    with pytest.raises(VerificationFailed) as info:
        sign.verify_index(project.config, f"{project.image}@{other}", c2, clean_env())
    assert info.value.reason == "provenance mismatch"
    assert c1 in info.value.message and c2 in info.value.message
    assert info.value.message.startswith("refusing to deploy: ")
    good = push_attested_index(registry, project.repo, c2)
    sign_it(project.config, project.image, good, c2)
    assert sign.verify_index(project.config, f"{project.image}@{good}", c2,
                             clean_env())[sign.SOURCE_SHA] == c2
