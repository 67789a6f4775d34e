"""`[sign]` and `deploy.verify` (issue #16): what signs the index, what a deploy verifies it
against, and every contradiction refused at load time (exit 2, one line naming the field)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci.core import config as cfg
from ci.core.errors import ConfigError

BASE = '[project]\nname = "svc"\nimage = "127.0.0.1:5000/team/svc"\n'
DEPLOY = '[deploy]\nremote = "deploy.git"\nmanifests = ["k8s/deployment.yaml"]\n'


def toml(sign: dict[str, object] | None = None, deploy: bool = True, **more: object) -> str:
    text = BASE + (DEPLOY if deploy else "")
    text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in more.items())
    if sign is not None:
        text += "[sign]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sign.items())
    return text


def problems(text: str, environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        cfg.loads(text, source="ci.toml", root="/srv/app", environ=environ)
    assert info.value.exit_code == 2
    assert all(len(line.splitlines()) == 1 for line in info.value.lines())
    return [(p.path, p.reason) for p in info.value.problems]


def test_no_sign_section_means_no_signing_and_no_verification() -> None:
    c = cfg.loads(toml())
    assert c.sign is None and c.deploy is not None and c.deploy.verify is None
    assert c.verify_deploy is False


def test_a_key_pair_signs_and_the_deploy_verifies_by_default() -> None:
    c = cfg.loads(toml({"key": "./keys//cosign.key", "public_key": "keys/cosign.pub"}))
    assert c.sign is not None and c.sign.signs and c.sign.verifies
    assert c.sign.key == "keys/cosign.key" and c.sign.password_env == "COSIGN_PASSWORD"
    assert c.verify_deploy is True


def test_keyless_signing_verified_by_identity_and_issuer() -> None:
    c = cfg.loads(toml({"keyless": True, "identity": "https://github.com/o/r/.github/workflows/"
                        "release.yml@refs/heads/main",
                        "issuer": "https://token.actions.githubusercontent.com"}))
    assert c.sign is not None and c.sign.keyless and c.sign.signs and c.verify_deploy


def test_verification_only_section_signs_nothing_but_still_verifies() -> None:
    """The deploy job of a matrix pipeline may hold only the public key."""
    c = cfg.loads(toml({"public_key": "/etc/maci/cosign.pub"}))
    assert c.sign is not None and not c.sign.signs and c.verify_deploy


def test_verify_with_nothing_to_verify_against_names_deploy_verify() -> None:
    [(path, reason)] = problems(toml({"key": "cosign.key"}))
    assert path == "deploy.verify" and "sign.public_key" in reason and "deploy.verify = false" in reason
    [(path, _)] = problems(toml(verify=True))  # on without any [sign]
    assert path == "deploy.verify"
    c = cfg.loads(toml({"key": "cosign.key"}, verify=False))
    assert c.verify_deploy is False


def test_no_deploy_section_needs_no_verifier() -> None:
    c = cfg.loads(toml({"key": "cosign.key"}, deploy=False))
    assert c.sign is not None and c.sign.signs and c.verify_deploy is False


@pytest.mark.parametrize(("sign", "field"), [
    ({"key": "k.key", "keyless": True, "public_key": "k.pub"}, "sign.keyless"),
    ({"keyless": True, "identity": "me@example.test"}, "sign.issuer"),
    ({"keyless": True, "issuer": "https://issuer.example.test"}, "sign.identity"),
    ({"key": "k.key", "public_key": "k.pub", "identity": "me", "issuer": "https://i"}, "sign.identity"),
    ({"keyless": True, "public_key": "k.pub"}, "sign.public_key"),
    ({"key": "k.key", "identity": "me", "issuer": "https://i"}, "sign.identity"),
])
def test_contradictions_name_the_field(sign: dict[str, object], field: str) -> None:
    assert field in [path for path, _ in problems(toml(sign))]


@pytest.mark.parametrize(("sign", "field"), [
    ({"key": "../outside/cosign.key", "public_key": "k.pub"}, "sign.key"),
    ({"key": "k.key", "public_key": "k.pub\nx"}, "sign.public_key"),
    ({"key": "k.key", "public_key": "k.pub", "password_env": "BAD-NAME"}, "sign.password_env"),
    ({"key": "k.key", "public_key": "k.pub", "identiti": "x"}, "sign.identiti"),
    ({"key": "", "public_key": "k.pub"}, "sign.key"),
])
def test_bad_values_name_the_field(sign: dict[str, object], field: str) -> None:
    assert [path for path, _ in problems(toml(sign))] == [field]


def test_absolute_key_paths_are_allowed() -> None:
    """A CI file variable (GitLab's type=file) lives outside the project."""
    c = cfg.loads(toml({"key": "/builds/tmp/COSIGN_KEY", "public_key": "/builds/tmp/pub"}))
    assert c.sign is not None and c.sign.key == "/builds/tmp/COSIGN_KEY"


def test_environment_overrides_reach_sign_and_verify() -> None:
    env = {"MACI_SIGN__KEYLESS": "true", "MACI_SIGN__IDENTITY": "me@example.test",
           "MACI_SIGN__ISSUER": "https://issuer.example.test", "MACI_SIGN__PASSWORD_ENV": "PW"}
    c = cfg.loads(toml(), environ=env)
    assert c.sign is not None and c.sign.keyless and c.sign.password_env == "PW" and c.verify_deploy
    off = cfg.loads(toml({"key": "k.key"}), environ={"MACI_DEPLOY__VERIFY": "false"})
    assert off.verify_deploy is False


def test_a_key_symlinked_out_of_the_project_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "keys").mkdir(parents=True)
    (tmp_path / "elsewhere.key").write_text("x")
    (root / "keys" / "cosign.key").symlink_to(tmp_path / "elsewhere.key")
    (root / "ci.toml").write_text(toml({"key": "keys/cosign.key", "public_key": "keys/cosign.pub"}))
    with pytest.raises(ConfigError) as info:
        cfg.load(root / "ci.toml", {}, root)
    assert [p.path for p in info.value.problems] == ["sign.key"]
    assert "symlink" in info.value.problems[0].reason
