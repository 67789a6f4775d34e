"""The OCI registry over HTTP (adapter): manifests, blobs, tags, platforms, auth, errors.

Every engine and the publish step talk to registries only through `RegistryClient`: it
retries transient failures, answers Basic/Bearer challenges with `publish.auth`
credentials, and turns HTTP errors into `RegistryError` with the status and the registry's
own message. The release algorithm on top of it (index, verify, tags) is `ci.stages.publish`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import stamina

from ci.core import redact
from ci.core.config import PublishConfig
from ci.core.config import RegistryAuth as AuthConfig
from ci.core.errors import ConfigError, ConfigProblem, RegistryError
from ci.core.oci import (
    ACCEPT,
    ATTESTATION_KEY,
    DIGEST_RE,
    OCI_MANIFEST,
    ImageRef,
    Manifest,
    digest_of,
    platform_str,
)

__all__ = ["Credentials", "ImageRef", "Manifest", "RegistryClient", "digest_of", "platform_str"]

log = logging.getLogger(__name__)
stamina.instrumentation.set_on_retry_hooks([])  # our own retry lines say what failed


@dataclass(frozen=True)
class Credentials:
    """Registry credentials; the password is registered with `ci.redact` when read."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def from_config(cls, auth: AuthConfig, environ: Mapping[str, str]) -> Credentials | None:
        """`publish.auth`: username + the env var named by `password_env` (None when unset)."""
        if not auth.username and not auth.password_env:
            return None
        password = environ.get(auth.password_env or "", "")
        if auth.password_env and not password:
            raise ConfigError([ConfigProblem(
                "publish.auth.password_env", auth.password_env, "environment variable is not set"
            )])
        redact.register(password)
        return cls(auth.username or "", password)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` → ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'([A-Za-z_]+)="?([^",]*)"?', rest))
    return scheme.lower(), params


class RegistryAuth(httpx.Auth):
    """Answers 401 challenges: Basic with the credentials, or Bearer via the token realm.

    The last Authorization header per host is reused, so a run asks for a token once per
    scope change, not once per request.
    """

    requires_response_body = True

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self._cached: dict[str, str] = {}
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        host = request.url.host
        with self._lock:
            cached = self._cached.get(host)
        if cached:
            request.headers["Authorization"] = cached
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = _challenge(response.headers.get("www-authenticate", ""))
        header = ""
        if scheme == "basic" and self.credentials:
            header = self.credentials.basic()
        elif scheme == "bearer" and params.get("realm"):
            query = {k: v for k, v in params.items() if k in ("service", "scope")}
            token_req = httpx.Request("GET", params["realm"], params=query)
            if self.credentials:
                token_req.headers["Authorization"] = self.credentials.basic()
            token_resp = yield token_req
            if token_resp.status_code != 200:
                return
            try:
                data = token_resp.json()
            except ValueError:
                return
            token = str(data.get("token") or data.get("access_token") or "")
            if not token:
                return
            redact.register(token)
            header = f"Bearer {token}"
        if not header:
            return
        with self._lock:
            self._cached[host] = header
        request.headers["Authorization"] = header
        yield request


class _Retryable(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retry_on(exc: Exception) -> bool:
    return isinstance(exc, (_Retryable, httpx.TransportError))


def _registry_message(response: httpx.Response) -> str:
    """`CODE: message` from the registry's error body, else the status text."""
    try:
        errs = response.json().get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs]
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    return response.reason_phrase or "error"


@dataclass
class RegistryClient:
    """One registry host. Methods take the repository path (`team/app`), never a tag list."""

    registry: str
    insecure: bool = False
    credentials: Credentials | None = None
    timeout: float = 60.0
    attempts: int = 3
    transport: httpx.BaseTransport | None = None
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    @classmethod
    def for_image(
        cls, image: str, publish: PublishConfig | None = None,
        environ: Mapping[str, str] | None = None, **kwargs: Any,
    ) -> RegistryClient:
        """A client for the registry of `image`, with `publish.auth` credentials if set."""
        ref = ImageRef.parse(image)
        creds = None
        if publish is not None:
            creds = Credentials.from_config(publish.auth, environ or {})
            kwargs.setdefault("insecure", publish.insecure)
        return cls(ref.registry, credentials=creds, **kwargs)

    @property
    def base_url(self) -> str:
        host = self.registry
        plain = self.insecure or host.startswith(("127.", "localhost", "[::1]"))
        return f"{'http' if plain else 'https'}://{host}"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.base_url, timeout=self.timeout, transport=self.transport,
                auth=RegistryAuth(self.credentials), follow_redirects=True,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------------ HTTP

    def request(
        self, method: str, path: str, *, ok: Sequence[int] = (200,), what: str = "",
        **kwargs: Any,
    ) -> httpx.Response:
        """One request with retries on 5xx/429/transport errors; other statuses → RegistryError."""
        what = what or f"{method} {path}"
        last = ""
        try:
            for attempt in stamina.retry_context(
                on=_retry_on, attempts=self.attempts, wait_initial=0.2, wait_max=2.0,
                wait_jitter=0.2, timeout=self.timeout * self.attempts,
            ):
                with attempt:
                    if attempt.num > 1:
                        log.warning("%s: attempt %d/%d after %s", what, attempt.num,
                                    self.attempts, last or "a transient error")
                    try:
                        resp = self.client.request(method, path, **kwargs)
                    except httpx.TransportError as exc:
                        last = redact.redact(f"{type(exc).__name__}: {exc}")
                        raise
                    if resp.status_code >= 500 or resp.status_code == 429:
                        last = f"HTTP {resp.status_code}"
                        raise _Retryable(resp)
        except _Retryable as exc:
            resp = exc.response
        except httpx.TransportError as exc:
            raise RegistryError(
                redact.redact(f"{what}: cannot reach registry {self.base_url}: {exc}")
            ) from None
        if resp.status_code not in ok:
            raise RegistryError(redact.redact(
                f"{what}: registry {self.registry} answered HTTP {resp.status_code}: "
                f"{_registry_message(resp)}"
            ))
        return resp

    def ping(self) -> None:
        self.request("GET", "/v2/", what="registry ping")

    # ------------------------------------------------------------- manifests

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        resp = self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                            what=f"read manifest {repo}:{ref}")
        body = resp.content
        media = resp.headers.get("content-type", "").split(";")[0].strip()
        digest = digest_of(body)
        if DIGEST_RE.match(ref) and digest != ref:
            raise RegistryError(f"manifest {repo}@{ref}: content has digest {digest}")
        return Manifest(digest, media or str(json.loads(body).get("mediaType", "")), body)

    def resolve(self, repo: str, ref: str) -> str | None:
        """The digest a tag points to, or None when it does not exist."""
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                            ok=(200, 404), what=f"resolve {repo}:{ref}")
        if resp.status_code == 404:
            return None
        digest = resp.headers.get("docker-content-digest")
        return digest or self.get_manifest(repo, ref).digest

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a digest or a tag; returns the digest of `body`."""
        digest = digest_of(body)
        self.request("PUT", f"/v2/{repo}/manifests/{ref}", content=body,
                     headers={"Content-Type": media_type}, ok=(200, 201, 202),
                     what=f"write manifest {repo}:{ref}")
        return digest

    def get_blob(self, repo: str, digest: str) -> bytes:
        return self.request("GET", f"/v2/{repo}/blobs/{digest}", what=f"read blob {digest}").content

    def has_blob(self, repo: str, digest: str) -> bool:
        """Whether `repo` already holds the blob (a push skips it: content-addressed)."""
        head = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404),
                            what=f"check blob {repo}@{digest}")
        return head.status_code == 200

    def put_blob(self, repo: str, data: bytes) -> str:
        """Upload a small blob in one request (POST a session, PUT ?digest=); returns its
        digest. Skipped when the registry already has it: blobs are content-addressed."""
        digest = digest_of(data)
        head = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404),
                            what=f"check blob {repo}@{digest}")
        if head.status_code == 200:
            return digest
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", ok=(202,),
                             what=f"start blob upload to {repo}")
        location = start.headers.get("location")
        if not location:
            raise RegistryError(f"start blob upload to {repo}: registry {self.registry} "
                                "answered without a Location header")
        # keep the session's own query (`_state`): httpx's params= would replace it
        target = httpx.URL(location).copy_merge_params({"digest": digest})
        self.request("PUT", str(target), content=data,
                     headers={"Content-Type": "application/octet-stream"}, ok=(201,),
                     what=f"upload blob {repo}@{digest}")
        return digest

    def tags(self, repo: str) -> list[str]:
        resp = self.request("GET", f"/v2/{repo}/tags/list", ok=(200, 404),
                            what=f"list tags of {repo}")
        if resp.status_code == 404:
            return []
        return sorted(resp.json().get("tags") or [])

    def remove_tag(self, repo: str, tag: str) -> None:
        """Delete a tag, keeping the manifest it points to.

        OCI 1.1 registries delete tags directly. Distribution 2.x cannot (a tag in a DELETE
        is read as a bad digest), so there we delete the manifest by digest (which unlinks
        its tags) and PUT the same bytes back by digest: same digest, no tag.
        """
        if self.resolve(repo, tag) is None:
            return
        resp = self.request("DELETE", f"/v2/{repo}/manifests/{tag}", ok=(200, 202, 400, 404, 405),
                            what=f"delete tag {repo}:{tag}")
        if resp.status_code in (200, 202) or self.resolve(repo, tag) is None:
            return
        manifest = self.get_manifest(repo, tag)
        self.request("DELETE", f"/v2/{repo}/manifests/{manifest.digest}", ok=(200, 202),
                     what=f"untag {repo}:{tag} (delete by digest; needs storage.delete enabled)")
        self.put_manifest(repo, manifest.digest, manifest.body, manifest.media_type)

    # --------------------------------------------------------------- platforms

    def descriptor(self, repo: str, digest: str) -> dict[str, Any]:
        """The index entry of one platform image, with the platform read from its config."""
        manifest = self.get_manifest(repo, digest)
        if manifest.is_index:
            images = [
                d for d in manifest.data.get("manifests", [])
                if ATTESTATION_KEY not in (d.get("annotations") or {})
                and (d.get("platform") or {}).get("architecture") not in (None, "unknown")
            ]
            if len(images) != 1:
                raise RegistryError(
                    f"{repo}@{digest} is an index of {len(images)} images, expected one platform"
                )
            return self.descriptor(repo, str(images[0]["digest"]))
        config_digest = str(manifest.data.get("config", {}).get("digest", ""))
        config = json.loads(self.get_blob(repo, config_digest)) if config_digest else {}
        arch, os_name = config.get("architecture"), config.get("os")
        if not arch or not os_name or "unknown" in (arch, os_name):
            raise RegistryError(f"{repo}@{digest}: image config has no platform ({os_name}/{arch})")
        platform: dict[str, str] = {"architecture": str(arch), "os": str(os_name)}
        if config.get("variant"):
            platform["variant"] = str(config["variant"])
        return {
            "mediaType": manifest.media_type or OCI_MANIFEST,
            "digest": manifest.digest,
            "size": len(manifest.body),
            "platform": platform,
        }

    def index_platforms(self, repo: str, ref: str) -> list[str]:
        """The platforms an index lists (normalised), attestation entries excluded."""
        manifest = self.get_manifest(repo, ref)
        if not manifest.is_index:
            raise RegistryError(f"{repo}:{ref} is a single image, not an index")
        return [platform_str(d.get("platform") or {}) for d in manifest.data.get("manifests", [])
                if ATTESTATION_KEY not in (d.get("annotations") or {})]

