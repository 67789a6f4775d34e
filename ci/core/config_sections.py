"""The release-side config sections (publish, deploy, sign, smoke, notify, mlflow, argo).

Split out of `ci.core.config` to keep each module small; `config` re-exports every name
here, so `from ci.core.config import DeployConfig` keeps working. Pure, like `config`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ci.core import paths, platforms
from ci.core.errors import MISSING, ConfigProblem

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def split_commas(value: Any) -> Any:
    """`"a, b"` → `["a", "b"]`: list fields may be given as one string (env overrides)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


StrList = Annotated[list[str], BeforeValidator(split_commas)]


class Section(BaseModel):
    """Every config table: unknown keys are errors, values are frozen and stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class RegistryAuth(Section):
    username: str | None = None
    password_env: str | None = Field(default=None, description="env var holding the password")


class PublishConfig(Section):
    tags: StrList = Field(default_factory=lambda: ["sha-{sha}", "{branch}", "{semver}"])
    latest_on: paths.OptionalBranch = Field(default="main", description="branch that also moves `latest`")
    auth: RegistryAuth = Field(default_factory=RegistryAuth)
    insecure: bool = False
    # Layer compression of the release image (containerd image store route only: Docker 20.10's
    # `docker push` always gzips at its own level). None = BuildKit's default, existing layers
    # kept as they are; set = every layer (re)compressed so, once per layer (BuildKit caches it).
    compression: Literal["gzip", "zstd", "uncompressed"] | None = None
    compression_level: int | None = Field(default=None, ge=0, le=22)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        allowed = {"sha", "short_sha", "branch", "semver", "major", "minor", "run_id"}
        for tag in value:
            for name in re.findall(r"{([^}]*)}", tag):
                if name not in allowed:
                    raise ValueError(f"tag template {tag!r} uses unknown field {{{name}}}")
        return value


class DeployConfig(Section):
    remote: paths.Remote = Field(min_length=1)
    branch: paths.Branch = "main"
    manifests: Annotated[list[paths.DeployFile], BeforeValidator(split_commas)] = Field(
        min_length=1)
    keep_tag: bool = True
    author: str = "multiarch-ci <ci@localhost>"
    max_retries: int = Field(default=3, ge=0, le=20)
    verify: bool | None = Field(default=None, description="check the index's signature before "
                                "pinning it; default: on when [sign] is configured")


class SignConfig(Section):
    """`[sign]`: how publish signs the index (a cosign key pair, or keyless with the CI's
    OIDC identity) and what a verifying deploy checks the signature against."""

    key: paths.HostFile | None = Field(default=None, description="cosign private key file")
    password_env: str = Field(default="COSIGN_PASSWORD", pattern=ENV_NAME,
                              description="env var holding the key's password")
    keyless: bool = Field(default=False, description="sign with the ambient OIDC identity")
    public_key: paths.HostFile | None = Field(default=None, description="verify with this key")
    identity: str | None = Field(default=None, min_length=1, description="keyless: the "
                                 "certificate identity to verify (--certificate-identity)")
    issuer: str | None = Field(default=None, min_length=1, description="keyless: the OIDC "
                               "issuer to verify (--certificate-oidc-issuer)")

    @property
    def signs(self) -> bool:
        """Whether publish signs here (a [sign] with only verification settings does not)."""
        return self.key is not None or self.keyless

    @property
    def verifies(self) -> bool:
        return self.public_key is not None or (self.identity is not None and self.issuer is not None)


def verify_deploy(sign: SignConfig | None, deploy: DeployConfig | None) -> bool:
    """Whether a deploy checks the signature: `deploy.verify`, by default on with [sign]."""
    if deploy is None:
        return False
    return deploy.verify if deploy.verify is not None else sign is not None


def sign_problems(sign: SignConfig | None, deploy: DeployConfig | None,
                  source: str = "") -> list[ConfigProblem]:
    """[sign] fields that contradict each other, and a verifying deploy with nothing to
    verify against: caught at load time, not after the index was published."""
    out: list[ConfigProblem] = []

    def bad(path: str, value: object, reason: str) -> None:
        out.append(ConfigProblem(path, value, reason, source))

    if sign is not None:
        if sign.key is not None and sign.keyless:
            bad("sign.keyless", True, "set either sign.key (a key pair) or keyless = true, not both")
        if (sign.identity is None) != (sign.issuer is None):
            missing = "sign.issuer" if sign.issuer is None else "sign.identity"
            bad(missing, MISSING, "sign.identity and sign.issuer go together (keyless verification)")
        if sign.public_key is not None and sign.identity is not None:
            bad("sign.identity", sign.identity,
                "verify against sign.public_key or sign.identity + issuer, not both")
        elif sign.keyless and sign.public_key is not None:
            bad("sign.public_key", sign.public_key, "keyless signatures carry a certificate, "
                "not a key: verify them with sign.identity and sign.issuer")
        elif sign.key is not None and sign.identity is not None:
            bad("sign.identity", sign.identity, "a key-pair signature has no certificate "
                "identity: verify it with sign.public_key")
    if verify_deploy(sign, deploy) and not (sign is not None and sign.verifies):
        bad("deploy.verify", True, "nothing to verify the index against: set sign.public_key "
            "(key pair) or sign.identity and sign.issuer (keyless), or deploy.verify = false")
    return out


class SmokeConfig(Section):
    requests: int = Field(default=50, ge=1, le=100_000)
    concurrency: int = Field(default=4, ge=1, le=256)
    port: int = Field(default=8080, ge=1, le=65535)
    health_path: paths.UrlPath = "/health"
    predict_path: paths.UrlPath = "/predict"
    payload: dict[str, Any] = Field(default_factory=dict)
    p95_ms: float = Field(default=250, gt=0)
    p95_ms_emulated: float = Field(default=2500, gt=0)
    max_error_rate: float = Field(default=0.0, ge=0, le=1)
    startup_timeout_seconds: float = Field(default=60, gt=0)


class NotifyConfig(Section):
    webhooks: StrList = Field(default_factory=list)
    timeout_seconds: float = Field(default=5, gt=0)

    @field_validator("webhooks")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^\s/]+", url):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value


class MlflowConfig(Section):
    tracking_uri: str | None = None
    token_env: str | None = Field(default=None, description="env var holding a bearer token")


K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a DNS-1123 label: namespaces, service accounts
SECRET_REF = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+$"  # <Secret name>/<key>


class ArgoToleration(Section):
    """One Kubernetes toleration of the release's pods (tainted arm64 pools, CI-only nodes)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class ArgoSecrets(Section):
    """Where each credential lives, as `<Kubernetes Secret>/<key>`: the exported objects only
    name them (secretKeyRef), so no value ever reaches a template."""

    registry_password: str = Field(default="maci-registry/password", pattern=SECRET_REF)
    mlflow_token: str = Field(default="maci-mlflow/token", pattern=SECRET_REF)
    cosign_key: str = Field(default="maci-cosign/cosign.key", pattern=SECRET_REF)
    cosign_password: str = Field(default="maci-cosign/password", pattern=SECRET_REF)
    deploy_token: str = Field(default="maci-deploy/token", pattern=SECRET_REF)
    git_username: str | None = Field(default=None, pattern=SECRET_REF)
    git_password: str | None = Field(default=None, pattern=SECRET_REF)
    github_webhook: str = Field(default="maci-webhook/github", pattern=SECRET_REF)
    gitlab_webhook: str = Field(default="maci-webhook/gitlab", pattern=SECRET_REF)


class ArgoConfig(Section):
    """`[argo]`: how `ci export argo` lays the release out in a cluster (Argo Workflows +
    Events); read only by the export, never by a release itself."""

    name: str | None = Field(default=None, pattern=K8S_NAME, max_length=52,
                             description="WorkflowTemplate name; default <project>-release")
    namespace: str = Field(default="argo", pattern=K8S_NAME)
    service_account: str = Field(default="maci-release", pattern=K8S_NAME)
    sensor_service_account: str = Field(default="maci-events", pattern=K8S_NAME)
    ci_image: str | None = Field(default=None, min_length=1, description="the image every "
                                 "step runs in (docker CLI + buildx, git, cosign, qemu, ci)")
    dind_image: str = Field(default="docker:27-dind", min_length=1)
    node_platforms: StrList | None = Field(default=None, description="platforms the cluster "
                                           "has nodes of; default project.platforms")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[ArgoToleration] = Field(default_factory=list)
    secrets: ArgoSecrets = Field(default_factory=ArgoSecrets)
    deploy_user: str = Field(default="oauth2", min_length=1, pattern=r"^[^\s:@/]+$")
    webhook_url: str = Field(default="", description="public base URL of the EventSource")
    github_repository: str = Field(default="", pattern=r"^$|^[\w.-]+/[\w.-]+$")
    gitlab_project: str = Field(default="", pattern=r"^$|^[\w.-]+(/[\w.-]+)+$")
    gitlab_url: str = Field(default="https://gitlab.com", pattern=r"^https?://[^\s/]+")

    @field_validator("node_platforms")
    @classmethod
    def _platforms(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(map(platforms.canonical, value)))
