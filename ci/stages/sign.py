"""Sign the published index, and verify it before a deploy pins it (issue #16, parts 4-5).

Publish signs the index by digest after it is written and checked, before any release tag
moves (`publish_release(before_tags=...)`), so a tag never names an unsigned index. The
signed payload carries what the release was made of: the source commit, the model version,
the digest of the verdict that let it through and the run id. A verifying deploy checks the
signature against `[sign]`'s public key (or keyless identity) AND that the signed source
commit is the one being deployed, before it clones anything: a signature of another
release cannot be replayed onto this commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ci.adapters import cosign
from ci.adapters.registry import Credentials
from ci.core import redact
from ci.core.config import Config, SignConfig
from ci.core.errors import ConfigError, ConfigProblem, UsageError, VerificationFailed
from ci.core.manifests import split_ref
from ci.core.oci import ImageRef
from ci.core.verdict import Verdict

log = logging.getLogger(__name__)
SOURCE_SHA = "dev.maci.source.sha"
MODEL_VERSION = "dev.maci.model.version"
VERDICT_DIGEST = "dev.maci.verdict.digest"
RUN_ID = "dev.maci.run.id"
Signer = Callable[[str], None]


def verdict_digest(verdict: Verdict) -> str:
    """sha256 of the verdict as canonical JSON (sorted keys, no spaces, UTF-8): anyone holding
    the verdict document can recompute it and match it with the signature."""
    text = json.dumps(verdict.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _file(config: Config, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else config.root_path / path


def _signing(config: Config) -> SignConfig:
    if config.sign is None or not config.sign.signs:
        raise UsageError("no signing configured: set [sign] key or keyless = true")
    return config.sign


def _password(config: Config, env: Mapping[str, str]) -> str | None:
    """The key's password from `sign.password_env` (registered as a secret); None keyless."""
    s = _signing(config)
    if s.keyless:
        return None
    if s.key is None or not _file(config, s.key).is_file():
        raise ConfigError([ConfigProblem("sign.key", s.key, "no such file: the cosign private key "
                                         "must exist when publish signs")])
    if s.password_env not in env:
        raise ConfigError([ConfigProblem("sign.password_env", s.password_env,
                                         "environment variable is not set (the key's password)")])
    password = env[s.password_env]
    redact.register(password)
    return password


@contextmanager
def _registry_env(config: Config, env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """cosign's registry login: `publish.auth` in a private DOCKER_CONFIG, if configured."""
    creds = Credentials.from_config(config.publish.auth, env)
    host = ImageRef.parse(config.project.image).registry
    host = "https://index.docker.io/v1/" if host == "registry-1.docker.io" else host
    with cosign.registry_auth(host, creds.username if creds else None,
                              creds.password if creds else None) as extra:
        yield extra


def sign_index(config: Config, image_repo: str, index_digest: str, source_sha: str,
               model_version: str | None, verdict_digest: str, run_id: str,
               env: Mapping[str, str]) -> dict[str, str]:
    """Sign `image_repo@index_digest` with the release's annotations; returns them.
    SignatureError when cosign fails, ConfigError when the key or its password is missing."""
    s = _signing(config)
    password = _password(config, env)
    annotations = {SOURCE_SHA: source_sha, MODEL_VERSION: model_version or "",
                   VERDICT_DIGEST: verdict_digest, RUN_ID: run_id}
    ref = f"{split_ref(image_repo)[0]}@{index_digest}"
    with _registry_env(config, env) as extra:
        cosign.sign(ref, annotations, key=None if s.keyless else _file(config, s.key or ""),
                    keyless=s.keyless, password=password, environ=env,
                    insecure=config.publish.insecure, extra_env=extra)
    log.info("signed %s (%s)", ref, "keyless" if s.keyless else "key pair")
    return {k: v for k, v in annotations.items() if v}


def signer(config: Config, verdict: Verdict, env: Mapping[str, str]) -> Signer | None:
    """The `before_tags` hook that signs the index of `verdict`'s release, or None when
    [sign] does not sign. The key and its password are checked now, before anything is
    written, so a missing one fails the publish while the registry is untouched."""
    if config.sign is None or not config.sign.signs:
        return None
    _password(config, env)
    model = verdict.model.candidate_version if verdict.model is not None else None
    run_id = verdict.run_id or next((r.run_id for r in verdict.platforms if r.run_id), "")
    digest_of_verdict = verdict_digest(verdict)

    def before_tags(index_digest: str) -> None:
        sign_index(config, config.project.image, index_digest, verdict.source.sha, model,
                   digest_of_verdict, run_id, env)

    return before_tags


def verifier(config: Config) -> cosign.Verifier:
    """What the signature must check out against, from [sign]; ConfigError when nothing."""
    s = config.sign
    if s is None or not s.verifies:
        raise ConfigError([ConfigProblem("deploy.verify", True, "nothing to verify the index "
                                         "against: set sign.public_key or sign.identity and sign.issuer")])
    if s.public_key is not None:
        return cosign.Verifier(public_key=_file(config, s.public_key))
    return cosign.Verifier(identity=s.identity, issuer=s.issuer)


def verify_index(config: Config, ref: str, expected_source_sha: str,
                 env: Mapping[str, str]) -> dict[str, str]:
    """The signed annotations of the index `ref` (`repo[:tag]@sha256:…`) when its signature
    checks out and names `expected_source_sha`; VerificationFailed (exit 1) otherwise."""
    repo, _tag, digest = split_ref(ref)
    if not digest:
        raise UsageError(f"cannot verify {ref!r}: not a digest reference")
    check = verifier(config)
    try:
        with _registry_env(config, env) as extra:
            signed = cosign.verify(f"{repo}@{digest}", check, environ=env,
                                   insecure=config.publish.insecure,
                                   expect={SOURCE_SHA: expected_source_sha}, extra_env=extra)
        check_provenance(config, repo, digest, expected_source_sha, env)
        return signed
    except VerificationFailed as exc:
        exc.message = f"refusing to deploy: {exc.message}"
        exc.args = (exc.message,)
        raise


def check_provenance(config: Config, repo: str, digest: str, expected_source_sha: str,
                     env: Mapping[str, str]) -> None:
    """Every platform's SLSA provenance under the signed index names the commit being
    deployed (an index re-assembled around another build is refused). An index without
    attestations (built on a classic-store daemon) passes on its signature alone."""
    from ci.adapters.registry import RegistryClient
    from ci.core.attest import SLSA_V02
    from ci.stages.attestations import read_attestations

    client = RegistryClient.for_image(repo, config.publish, env)
    try:
        found = read_attestations(client, ImageRef.parse(repo).repository, digest)
    finally:
        client.close()
    for platform, statements in sorted(found.items()):
        slsa = statements.get(SLSA_V02)
        got = ((slsa or {}).get("predicate", {}).get("invocation", {}).get("configSource", {})
               .get("digest", {}).get("sha1", "")) if slsa else ""
        if slsa is not None and got != expected_source_sha:
            raise VerificationFailed(
                f"{repo}@{digest}: the {platform} provenance names source {got or 'nothing'}, "
                f"not {expected_source_sha}", reason="provenance mismatch")
