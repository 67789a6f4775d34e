"""The shell of each Argo Workflow step (pure): the same `ci` calls, files and exit codes as the
GitLab template's jobs, written against fixed paths in the step's pod.

A step's pod checks the source out at SRC (a git input artifact), gets the files earlier steps
made under IN (input artifacts) and leaves its own under OUT (output artifacts and parameters).
Every script runs with `set -eu`: the first failing `ci` call fails the step, and a failed step
stops the DAG (Argo's default; nothing here uses `continueOn`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ci.core.config import Config

SRC, IN, OUT, TMP = "/maci/src", "/maci/in", "/maci/out", "/maci/tmp"
DOCKER_HOST = "tcp://localhost:2376"  # the dind sidecar, TLS with the certs it shares in /certs
COSIGN_KEY_ENV = "MACI_COSIGN_KEY"
DEPLOY_TOKEN_ENV = "MACI_DEPLOY_TOKEN"

_WAIT_DOCKER = """\
i=0
until docker info >/dev/null 2>&1; do  # the dind sidecar starts with the pod
  i=$((i + 1))
  if [ "$i" -gt 120 ]; then
    echo "no Docker daemon answered at ${DOCKER_HOST:-the default socket} within 120 s" >&2
    exit 1
  fi
  sleep 1
done
"""


def q(word: str) -> str:
    """One shell word (a path, a platform): quoted only when it needs to be."""
    return shlex.quote(word)


def pick(path: str, keys: Sequence[str], out: str) -> str:
    """Copy one JSON field of `path` into the file `out` (an output parameter)."""
    expr = "".join(f"[{json.dumps(k)}]" for k in keys)
    code = f"import json, sys; print(json.load(open(sys.argv[1])){expr})"
    return f"python3 -c {q(code)} {path} > {out}\n"


def script(*parts: str) -> str:
    return "set -eu\n" + "".join(parts)


def _stale_check(config: Config) -> str:
    """Fail early (before any build) when the config at this revision no longer plans what
    the template was exported for: the DAG's shape comes from the export, not from the run."""
    want = {"platforms": sorted(config.project.platforms), "training": config.model is not None,
            "deploy": config.deploy is not None}
    literal = "{" + ", ".join(f"{k!r}: {v!r}" for k, v in sorted(want.items())) + "}"
    return (f"python3 - {IN}/plan.json <<'EOF'\n"
            "import json, sys\n"
            "plan = json.load(open(sys.argv[1]))\n"
            f"want = {literal}\n"
            'got = {"platforms": sorted(j["platform"] for j in plan["jobs"]),\n'
            '       "training": bool(plan.get("training")), "deploy": bool(plan.get("deploy"))}\n'
            "if got != want:\n"
            '    sys.exit(f"this WorkflowTemplate was exported for {want}, the config at this "\n'
            '             f"revision plans {got}: export it again (ci export argo)")\n'
            "EOF\n")


def plan_script(cfg: str) -> str:
    # --matrix: a store only one pod could see (embedded MLflow, a deploy remote in the
    # checkout) is refused here (exit 2). Exit 1 only says this pod has no Docker daemon to
    # place a platform on: each job runs on a node of its own.
    return script("rc=0\n",
                  f"ci plan --matrix --config {cfg} --json > {OUT}/plan.json || rc=$?\n",
                  '[ "$rc" -le 1 ] || exit "$rc"\n')


def train_script(config: Config, cfg: str, docker: bool) -> str:
    return script(_stale_check(config), _WAIT_DOCKER if docker else "",
                  f"ci train --config {cfg} --json > {OUT}/gate.json\n",
                  pick(f"{OUT}/gate.json", ["version"], f"{OUT}/model-version"))


def job_script(config: Config, cfg: str, platform: str, slug: str) -> str:
    model = ' --model-version "$MODEL_VERSION"' if config.model is not None else ""
    check = _stale_check(config) if config.model is None else ""
    return script(check, _WAIT_DOCKER,
                  f"ci job --config {cfg} --platform {q(platform)} "
                  f"--output {OUT}/result-{slug}.json{model}\n")


def _cosign_key() -> str:
    """The signing key from its Secret (an env var) into a private file for cosign."""
    return (f'if [ -n "${{{COSIGN_KEY_ENV}:-}}" ]; then\n'
            f"  mkdir -p {TMP} && umask 077\n"
            f"  printf '%s\\n' \"${COSIGN_KEY_ENV}\" > {TMP}/cosign.key\n"
            f"  export MACI_SIGN__KEY={TMP}/cosign.key\n"
            "fi\n")


def merge_script(config: Config, cfg: str, slugs: Sequence[str]) -> str:
    gated = f" --model-result {IN}/gate.json" if config.model is not None else ""
    results = " ".join(f"{IN}/result-{s}.json" for s in slugs)
    # the same gates as `ci run`: a missing, failed or mismatched leg or a rejected model
    # refuses the merge (exit 1, nothing tagged)
    return script(_cosign_key() if signs(config) else "",
                  f"ci merge --config {cfg} --json{gated} {results} > {OUT}/merge.json\n",
                  pick(f"{OUT}/merge.json", ["publish", "digest"], f"{OUT}/index-digest"))


def stress_script(config: Config, cfg: str) -> str:
    port = config.smoke.port if config.smoke else 8080
    return script(f'ci smoke --config {cfg} --url "http://$CANARY_IP:{port}" '
                  f'--reference "$REFERENCE" --output {OUT}/smoke.json\n')


def _deploy_credentials(config: Config) -> str:
    """An https deploy remote gets the token through git's environment: no file written."""
    host = deploy_host(config)
    if not host:
        return ""
    user = config.argo.deploy_user
    return ("export GIT_CONFIG_COUNT=1\n"
            f'export GIT_CONFIG_KEY_0="url.https://{user}:${{{DEPLOY_TOKEN_ENV}}}@{host}/.insteadOf"\n'
            f'export GIT_CONFIG_VALUE_0="https://{host}/"\n')


def deploy_script(config: Config, cfg: str) -> str:
    model = ' --model-version "$MODEL_VERSION"' if config.model is not None else ""
    return script(_deploy_credentials(config),
                  "digest=$(python3 -c 'import json, sys; "
                  "print(json.load(open(sys.argv[1]))[\"publish\"][\"digest\"])' "
                  f"{IN}/merge.json)\n",
                  f'ci deploy --config {cfg} --index "$digest"{model} --json > {OUT}/deploy.json\n',
                  pick(f"{OUT}/deploy.json", ["commit"], f"{OUT}/deploy-commit"))


def promote_script(config: Config, cfg: str) -> str:
    commit = ' --deploy-commit "$DEPLOY_COMMIT"' if config.deploy is not None else ""
    return script(f'ci promote --config {cfg} --model-version "$MODEL_VERSION"{commit}\n')


def signs(config: Config) -> bool:
    """A key-pair signature on publish: the key comes from a Secret, never from the checkout."""
    return config.sign is not None and not config.sign.keyless


def deploy_host(config: Config) -> str:
    """The host of an https deploy remote (its token is a Secret), else ''."""
    remote = config.deploy.remote if config.deploy else ""
    if not remote.startswith("https://"):
        return ""
    return urlsplit(remote).netloc.rpartition("@")[2]


def env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def secret_env(name: str, ref: str) -> dict[str, Any]:
    """An env var from a Kubernetes Secret (`<secret>/<key>`): the template holds its name only."""
    secret, _, key = ref.partition("/")
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def secrets_for(config: Config, step: str) -> list[dict[str, Any]]:
    """The secret env vars one step needs, named as the config reads them."""
    refs = config.argo.secrets
    out: list[dict[str, Any]] = []
    password_env = config.publish.auth.password_env
    if password_env and step in ("job", "merge", "deploy"):
        out.append(secret_env(password_env, refs.registry_password))
    if config.mlflow.token_env and step in ("train", "job", "merge", "promote"):
        out.append(secret_env(config.mlflow.token_env, refs.mlflow_token))
    if step == "merge" and signs(config) and config.sign is not None:
        out.append(secret_env(COSIGN_KEY_ENV, refs.cosign_key))
        out.append(secret_env(config.sign.password_env, refs.cosign_password))
    if step == "deploy" and deploy_host(config):
        out.append(secret_env(DEPLOY_TOKEN_ENV, refs.deploy_token))
    return out
