"""cosign (adapter): sign an image index by digest, verify its signature, read its annotations.

Two ways to sign: a cosign key pair (offline: no transparency log upload, verified with
`--insecure-ignore-tlog`), or keyless with the CI's ambient OIDC identity (Fulcio + Rekor,
verified by certificate identity and issuer). The key's password reaches cosign only in its
own environment (`COSIGN_PASSWORD`), never argv, and is registered with `ci.redact`;
registry credentials go in a private temporary DOCKER_CONFIG, as for `docker push`.
cosign's failures become `SignatureError` / `VerificationFailed`, keeping its output.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci.adapters import proc
from ci.core import redact
from ci.core.errors import SignatureError, StepFailed, ToolMissing, VerificationFailed

TIMEOUT = 180.0
PASSWORD_VAR = "COSIGN_PASSWORD"
DEFAULT_PREFIX = "/opt/maci-cosign"  # scripts/install-cosign.sh (MACI_COSIGN_PREFIX)
NO_SIGNATURES = "no signatures found"
OTHER_SIGNER = "signed by another key"
OTHER_IDENTITY = "signed by another identity"
MISMATCH = "annotation mismatch"


@dataclass(frozen=True)
class Verifier:
    """What a signature must check out against: a public key, or a keyless identity."""

    public_key: Path | None = None
    identity: str | None = None
    issuer: str | None = None

    def args(self) -> list[str]:
        if self.public_key is not None:
            return ["--key", str(self.public_key), "--insecure-ignore-tlog=true"]
        if self.identity and self.issuer:
            return ["--certificate-identity", self.identity, "--certificate-oidc-issuer", self.issuer]
        raise VerificationFailed("nothing to verify against: no public key and no identity",
                                 reason="no verifier")

    def describe(self) -> str:
        if self.public_key is not None:
            return f"key {self.public_key.name}"
        return f"identity {self.identity} from {self.issuer}"


def locate(environ: Mapping[str, str]) -> str:
    """cosign on PATH, else where scripts/install-cosign.sh puts it; ToolMissing otherwise."""
    found = shutil.which("cosign", path=environ.get("PATH", os.defpath))
    if found:
        return found
    fallback = Path(environ.get("MACI_COSIGN_PREFIX") or DEFAULT_PREFIX) / "bin" / "cosign"
    if fallback.is_file() and os.access(fallback, os.X_OK):
        return str(fallback)
    raise ToolMissing("cosign is not installed: put it on PATH or run scripts/install-cosign.sh")


def _registry_flags(ref: str, insecure: bool) -> list[str]:
    """Plain HTTP (and no TLS check) where our registry client uses it: `publish.insecure`
    or a loopback registry."""
    host = ref.split("/", 1)[0]
    if insecure or host.startswith(("127.", "localhost", "[::1]")):
        return ["--allow-insecure-registry", "--allow-http-registry"]
    return []


@contextlib.contextmanager
def registry_auth(registry: str, username: str | None, password: str | None) -> Iterator[dict[str, str]]:
    """Env for cosign with the registry credentials in a private temporary DOCKER_CONFIG
    (mode 0700, removed after), or {} when there are none (cosign's own keychain)."""
    if not username and not password:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="maci-cosign-auth-") as folder:
        token = base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode()
        path = Path(folder) / "config.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps({"auths": {registry: {"auth": token}}}))
        yield {"DOCKER_CONFIG": folder}


def _last_line(result: proc.Result) -> str:
    lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("Error:", "error"))]
    return redact.redact((errors or lines or ["no output"])[0].removeprefix("Error: "))


def _run(cmd: list[str], environ: Mapping[str, str], extra: Mapping[str, str], what: str) -> proc.Result:
    try:
        return proc.run(cmd, env=environ, extra_env=extra, timeout=TIMEOUT, check=False, step=what)
    except StepFailed as exc:  # the timeout: a registry (or Sigstore) that hangs
        if what == "cosign sign":
            raise SignatureError(exc.message, cmd=exc.cmd, stdout=exc.stdout) from None
        raise VerificationFailed(exc.message, reason="timed out", cmd=exc.cmd, stdout=exc.stdout) from None


def sign(ref: str, annotations: Mapping[str, str], *, key: Path | None, keyless: bool,
         password: str | None, environ: Mapping[str, str], insecure: bool = False,
         extra_env: Mapping[str, str] | None = None) -> None:
    """Sign `ref` (`repo@sha256:…`) with `annotations` in the signed payload; the signature
    is pushed next to the index (a `sha256-….sig` manifest), no tag of the release moves."""
    if "@sha256:" not in ref:
        raise SignatureError(f"refusing to sign {ref}: sign an index by digest, never a tag")
    cmd = [locate(environ), "sign", "-y", *_registry_flags(ref, insecure)]
    extra = dict(extra_env or {})
    if keyless:
        how = "keyless"
    elif key is not None:
        cmd += ["--key", str(key), "--tlog-upload=false"]
        redact.register(password)
        extra[PASSWORD_VAR] = password or ""
        how = f"key {key.name}"
    else:
        raise SignatureError("nothing to sign with: no key and not keyless")
    for name, value in sorted(annotations.items()):
        if value:
            cmd += ["-a", f"{name}={value}"]
    result = _run([*cmd, ref], environ, extra, "cosign sign")
    if not result.ok:
        why = _last_line(result).removeprefix(f"signing [{ref}]: ")
        raise SignatureError(f"signing {ref} ({how}) failed (exit {result.returncode}): {why}",
                             cmd=result.cmd, returncode=result.returncode,
                             stdout=result.stdout, stderr=result.stderr)


def verify(ref: str, verifier: Verifier, *, environ: Mapping[str, str], insecure: bool = False,
           expect: Mapping[str, str] | None = None,
           extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The annotations of a signature of `ref` that checks out against `verifier` and holds
    every `expect` pair; VerificationFailed (one line, the reason first) otherwise."""
    cmd = [locate(environ), "verify", "--output", "json", *_registry_flags(ref, insecure),
           *verifier.args(), ref]
    result = _run(cmd, environ, dict(extra_env or {}), "cosign verify")
    kept: dict[str, Any] = {"cmd": result.cmd, "returncode": result.returncode,
                            "stdout": result.stdout, "stderr": result.stderr}
    if not result.ok:
        text = f"{result.stderr}\n{result.stdout}"
        if NO_SIGNATURES in text:
            reason = NO_SIGNATURES
        elif "no matching signatures" in text:
            reason = OTHER_IDENTITY if verifier.public_key is None else OTHER_SIGNER
        else:
            reason = f"cannot verify (exit {result.returncode})"
        why = _last_line(result)
        detail = "" if why == reason else f" ({why})"
        raise VerificationFailed(f"{reason}: {ref} does not check out against "
                                 f"{verifier.describe()}{detail}", reason=reason, **kept)
    found = _annotations(result.stdout)
    want = dict(expect or {})
    for signed in found:
        if all(signed.get(k) == v for k, v in want.items()):
            return signed
    got = "; ".join(", ".join(f"{k}={a.get(k, '<none>')}" for k in want) for a in found) or "nothing"
    raise VerificationFailed(f"{MISMATCH}: {ref} is signed by {verifier.describe()} for "
                             f"{got}, expected {', '.join(f'{k}={v}' for k, v in want.items())}",
                             reason=MISMATCH, **kept)


def _annotations(stdout: str) -> list[dict[str, str]]:
    """The `optional` annotations of every verified signature in cosign's JSON output."""
    for line in stdout.splitlines():
        if line.lstrip().startswith("["):
            try:
                payloads = json.loads(line)
            except ValueError:
                continue
            return [{str(k): str(v) for k, v in (p.get("optional") or {}).items()
                     if isinstance(v, str)} for p in payloads if isinstance(p, dict)]
    return []
