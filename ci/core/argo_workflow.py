"""The release as an Argo `WorkflowTemplate` (pure): the DAG of templates/gitlab's jobs, one
`ci job` pod per platform on a node of the architecture the plan placed it on.

The cluster's node pools are the runners (`[argo] node_platforms`, default every project
platform): `ci.core.plan.make_plan` places each platform on them exactly as `ci plan` places it
on daemons, so a platform without a node of its own is `emulated` on another node's pod (its
init container registers qemu with `ci setup-qemu`), and none at all with `fallback = "fail"`
is refused. Output is plain dicts in a fixed key order: the same config gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ci.core import argo_steps as steps
from ci.core import platforms
from ci.core.argo_steps import IN, OUT, SRC, TMP, env
from ci.core.config import ENV_PREFIX, Config
from ci.core.errors import UsageError
from ci.core.plan import Plan, RunnerInfo, make_plan
from ci.core.version import __version__

API = "argoproj.io/v1alpha1"
ENTRY = "release"
PARAMS = ("repo", "revision", "ref")  # what a push event (the Sensor) or `argo submit -p` gives
ARCH_LABEL, OS_LABEL = "kubernetes.io/arch", "kubernetes.io/os"  # Kubernetes' well-known labels
NODE_PREFIX = "nodes-"
VOLUMES = ("maci-out", "maci-tmp", "maci-docker", "maci-certs")


def cluster_runners(config: Config) -> list[RunnerInfo]:
    """One runner per node platform; with `fallback = "qemu"` any node's pod can emulate
    every project platform (after `ci setup-qemu` in its init container)."""
    nodes = config.argo.node_platforms or config.project.platforms
    emulates = list(config.project.platforms) if config.emulation.fallback == "qemu" else []
    return [RunnerInfo(name=NODE_PREFIX + platforms.parse(p).slug, engine="docker", capacity=64,
                       reachable=True, native=p, emulates=emulates, declared=p,
                       platform_source="declared") for p in nodes]


def cluster_plan(config: Config) -> Plan:
    """`make_plan` against the cluster's nodes; a platform no node can run is bad input."""
    plan = make_plan(config, cluster_runners(config))
    for job in plan.unavailable:
        nodes = ", ".join(config.argo.node_platforms or config.project.platforms)
        raise UsageError(f"argo.node_platforms: no node runs {job.platform} (nodes: {nodes}) "
                         f"and emulation.fallback is {config.emulation.fallback!r}")
    return plan


def node_selector(platform: str, extra: dict[str, str]) -> dict[str, str]:
    """Kubernetes labels nodes with `kubernetes.io/os` and `kubernetes.io/arch` (GOARCH: amd64,
    arm64, arm) but has no variant label: linux/arm/v7 selects `arch: arm`, and a pool of v6
    boards needs a label of its own in `[argo] node_selector`."""
    p = platforms.parse(platform)
    return {OS_LABEL: p.os, ARCH_LABEL: p.architecture, **dict(sorted(extra.items()))}


@dataclass(frozen=True)
class Export:
    """What the template is made from: the config, its plan on the cluster's nodes, the `ci`
    image every step runs in, and the config's path inside the repository."""

    config: Config
    plan: Plan
    ci_image: str
    config_path: str
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.config.argo.name or k8s_name(self.config.project.name) + "-release"

    @property
    def cfg(self) -> str:
        return steps.q(self.config_path)

    def slugs(self) -> list[str]:
        return [platforms.parse(j.platform).slug for j in self.plan.jobs]


def k8s_name(text: str) -> str:
    """A project name as a DNS-1123 label: lowercase, `_`/`.` → `-`, at most 44 characters."""
    out = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:44].strip("-")
    return out or "release"


def _mounts() -> list[dict[str, str]]:
    return [{"name": "maci-out", "mountPath": OUT}, {"name": "maci-tmp", "mountPath": TMP}]


def config_env(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The `MACI_SECTION__FIELD` overrides the export saw (not `[argo]`'s own): every step gets
    them too, so the pods release the config that was exported, not just the file."""
    sections = set(Config.model_fields) - {"root", "argo"}
    found = []
    for key, value in sorted(environ.items()):
        path = key.removeprefix(ENV_PREFIX).split("__")
        if key.startswith(ENV_PREFIX) and len(path) >= 2 and all(path) and path[0].lower() in sections:
            if re.search(r"://[^/@\s]+:[^/@\s]*@", value):
                raise UsageError(f"{key}: holds credentials in a URL, which the template would "
                                 "show; give them to the steps from a Secret instead")
            found.append((key, value))
    return tuple(found)


def _base_env(x: Export) -> list[dict[str, Any]]:
    return [env("MACI_SOURCE_REF", "{{workflow.parameters.ref}}"),
            env("MACI_RUN_ID", "{{workflow.name}}"), env("PYTHONUNBUFFERED", "1"),
            *(env(k, v) for k, v in x.overrides)]


def _source(config: Config) -> dict[str, Any]:
    """The pushed commit, full history (the deploy guard decides by git ancestry)."""
    git: dict[str, Any] = {"repo": "{{workflow.parameters.repo}}",
                           "revision": "{{workflow.parameters.revision}}"}
    refs = config.argo.secrets
    for field, ref in (("usernameSecret", refs.git_username), ("passwordSecret", refs.git_password)):
        if ref:
            secret, _, key = ref.partition("/")
            git[field] = {"name": secret, "key": key}
    return {"name": "source", "path": SRC, "git": git}


def _artifact(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "path": path, "archive": {"none": {}}}


def _param(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"path": path}}


def _step(x: Export, name: str, source: str, *, step: str,
          inputs: Sequence[dict[str, Any]] = (), params: Sequence[str] = (),
          artifacts: Sequence[dict[str, Any]] = (), outputs: Sequence[dict[str, Any]] = (),
          docker: bool = False, env_extra: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """One script template in the `ci` image: source checked out, secrets as secretKeyRef."""
    environ = [*_base_env(x), *env_extra, *steps.secrets_for(x.config, step)]
    mounts = _mounts()
    if docker:
        environ += [env("DOCKER_HOST", steps.DOCKER_HOST), env("DOCKER_TLS_VERIFY", "1"),
                    env("DOCKER_CERT_PATH", "/certs/client")]
        mounts.append({"name": "maci-certs", "mountPath": "/certs"})
    template: dict[str, Any] = {
        "name": name,
        "inputs": {"parameters": [{"name": p} for p in params],
                   "artifacts": [_source(x.config), *inputs]},
    }
    if not params:
        del template["inputs"]["parameters"]
    out: dict[str, Any] = {}
    if outputs:
        out["parameters"] = list(outputs)
    if artifacts:
        out["artifacts"] = list(artifacts)
    if out:
        template["outputs"] = out
    template["script"] = {"image": x.ci_image, "command": ["sh"], "workingDir": SRC,
                          "env": environ, "volumeMounts": mounts, "source": source}
    if docker:
        template["sidecars"] = [_dind(x.config)]
    return template


def _dind(config: Config) -> dict[str, Any]:
    """The pod's own Docker daemon (buildx, the leg's smoke test), TLS-only on localhost."""
    return {"name": "dind", "image": config.argo.dind_image,
            "env": [env("DOCKER_TLS_CERTDIR", "/certs")],
            "securityContext": {"privileged": True},
            "volumeMounts": [{"name": "maci-docker", "mountPath": "/var/lib/docker"},
                             {"name": "maci-certs", "mountPath": "/certs"}]}


def _task(name: str, deps: list[str], params: dict[str, str] | None = None,
          artifacts: dict[str, str] | None = None, template: str = "") -> dict[str, Any]:
    task: dict[str, Any] = {"name": name, "template": template or name}
    if deps:
        task["dependencies"] = deps
    args: dict[str, Any] = {}
    if params:
        args["parameters"] = [{"name": k, "value": v} for k, v in params.items()]
    if artifacts:
        args["artifacts"] = [{"name": k, "from": v} for k, v in artifacts.items()]
    if args:
        task["arguments"] = args
    return task


def _mutex(name: str) -> dict[str, Any]:
    """One publish (or deploy) of this project at a time, like the GitLab resource_group."""
    return {"mutexes": [{"name": name}]}


def _tolerations(config: Config) -> list[dict[str, Any]]:
    names = {"key": "key", "operator": "operator", "value": "value", "effect": "effect",
             "toleration_seconds": "tolerationSeconds"}
    return [{names[k]: v for k, v in t.model_dump().items() if v is not None}
            for t in config.argo.tolerations]


def _job(x: Export, job: Any, slug: str) -> dict[str, Any]:
    """`ci job` for one platform, on a node of the platform its placement runs on: its own
    for `native`, another one's (qemu registered by the init container) for `emulated`."""
    c = x.config
    model = c.model is not None
    host = {r.name: r.native for r in x.plan.runners}[job.placement.runner]
    t = _step(x, f"job-{slug}", steps.job_script(c, x.cfg, job.platform, slug), step="job",
              params=["model-version"] if model else [],
              inputs=[] if model else [_artifact("plan", f"{IN}/plan.json")],
              artifacts=[_artifact("result", f"{OUT}/result-{slug}.json")], docker=True,
              env_extra=[env("MODEL_VERSION", "{{inputs.parameters.model-version}}")] if model
              else [])
    t["metadata"] = {"annotations": {"multiarch-ci/platform": job.platform,
                                     "multiarch-ci/placement": job.placement.kind}}
    t["nodeSelector"] = node_selector(str(host), c.argo.node_selector)
    if job.placement.kind == "emulated":
        t["initContainers"] = [{"name": "setup-qemu", "image": x.ci_image,
                                "command": ["ci", "setup-qemu", "--platform", job.platform],
                                "securityContext": {"privileged": True}}]
    return t


def _smoke(x: Export) -> list[dict[str, Any]]:
    """The stress test in the cluster: the published index runs as a daemon pod (the canary,
    stopped when the smoke DAG ends) and `ci smoke --url` loads it with the [smoke] bounds;
    it waits for health itself, up to `startup_timeout_seconds`."""
    c = x.config
    port = c.smoke.port if c.smoke else 8080
    ref = f"{c.project.image}@{{{{inputs.parameters.index-digest}}}}"
    digest = {"index-digest": "{{inputs.parameters.index-digest}}"}
    dag = {"name": "smoke", "inputs": {"parameters": [{"name": "index-digest"}]},
           "dag": {"tasks": [_task("canary", [], digest),
                             _task("stress", ["canary"],
                                   {"canary-ip": "{{tasks.canary.ip}}", **digest})]}}
    canary = {"name": "canary", "daemon": True,
              "inputs": {"parameters": [{"name": "index-digest"}]},
              "container": {"image": ref, "ports": [{"name": "http", "containerPort": port}]}}
    stress = _step(x, "stress", steps.stress_script(c, x.cfg), step="smoke",
                   params=["canary-ip", "index-digest"],
                   artifacts=[_artifact("smoke", f"{OUT}/smoke.json")],
                   env_extra=[env("CANARY_IP", "{{inputs.parameters.canary-ip}}"),
                              env("REFERENCE", ref)])
    return [dag, canary, stress]


def workflow_template(x: Export) -> dict[str, Any]:
    """plan → train (+ gate) → one job per platform → merge (publish) → smoke → deploy →
    promote; a step runs only when every step it depends on succeeded."""
    c = x.config
    model, version = c.model is not None, "{{tasks.train.outputs.parameters.model-version}}"
    plan_art = {"plan": "{{tasks.plan.outputs.artifacts.plan}}"}
    tasks = [_task("plan", [])]
    templates = [_step(x, "plan", steps.plan_script(x.cfg), step="plan",
                       artifacts=[_artifact("plan", f"{OUT}/plan.json")])]
    if c.model is not None:
        tasks.append(_task("train", ["plan"], artifacts=plan_art))
        templates.append(_step(
            x, "train", steps.train_script(c, x.cfg, c.model.container is not None),
            step="train", inputs=[_artifact("plan", f"{IN}/plan.json")],
            artifacts=[_artifact("gate", f"{OUT}/gate.json")],
            outputs=[_param("model-version", f"{OUT}/model-version")],
            docker=c.model.container is not None))
    trained = ["train"] if model else []
    for job, slug in zip(x.plan.jobs, x.slugs(), strict=True):
        tasks.append(_task(f"job-{slug}", trained or ["plan"],
                           {"model-version": version} if model else None,
                           None if model else plan_art))
        templates.append(_job(x, job, slug))
    results = {f"result-{s}": f"{{{{tasks.job-{s}.outputs.artifacts.result}}}}" for s in x.slugs()}
    gate = {"gate": "{{tasks.train.outputs.artifacts.gate}}"} if model else {}
    tasks.append(_task("merge", [f"job-{s}" for s in x.slugs()] + trained,
                       artifacts={**results, **gate}))
    merge = _step(x, "merge", steps.merge_script(c, x.cfg, x.slugs()), step="merge",
                  inputs=[_artifact(n, f"{IN}/{n}.json") for n in (*results, *gate)],
                  artifacts=[_artifact("merge", f"{OUT}/merge.json")],
                  outputs=[_param("index-digest", f"{OUT}/index-digest")])
    merge["synchronization"] = _mutex(f"{x.name}-publish")
    templates.append(merge)
    released = ["merge"]
    if c.smoke is not None:
        tasks.append(_task("smoke", ["merge"],
                           {"index-digest": "{{tasks.merge.outputs.parameters.index-digest}}"}))
        templates += _smoke(x)
        released = ["smoke"]
    model_env = [env("MODEL_VERSION", "{{inputs.parameters.model-version}}")] if model else []
    if c.deploy is not None:
        tasks.append(_task("deploy", sorted({"merge", *released, *trained}),
                           {"model-version": version} if model else None,
                           {"merge": "{{tasks.merge.outputs.artifacts.merge}}"}))
        deploy = _step(x, "deploy", steps.deploy_script(c, x.cfg), step="deploy",
                       params=["model-version"] if model else [], env_extra=model_env,
                       inputs=[_artifact("merge", f"{IN}/merge.json")],
                       artifacts=[_artifact("deploy", f"{OUT}/deploy.json")],
                       outputs=[_param("deploy-commit", f"{OUT}/deploy-commit")])
        deploy["synchronization"] = _mutex(f"{x.name}-deploy")
        templates.append(deploy)
        released = ["deploy"]
    if model:
        commit = {"deploy-commit": "{{tasks.deploy.outputs.parameters.deploy-commit}}"}
        tasks.append(_task("promote", sorted({*released, "train"}),
                           {"model-version": version, **(commit if c.deploy else {})}))
        promote = _step(x, "promote", steps.promote_script(c, x.cfg), step="promote",
                        params=["model-version", *(["deploy-commit"] if c.deploy else [])],
                        env_extra=[*model_env, *([env("DEPLOY_COMMIT",
                                                      "{{inputs.parameters.deploy-commit}}")]
                                                 if c.deploy else [])])
        promote["synchronization"] = _mutex(f"{x.name}-deploy")
        templates.append(promote)
    spec: dict[str, Any] = {
        "entrypoint": ENTRY,
        "serviceAccountName": c.argo.service_account,
        "arguments": {"parameters": [{"name": p} for p in PARAMS]},
    }
    if c.argo.node_selector:
        spec["nodeSelector"] = dict(sorted(c.argo.node_selector.items()))
    if c.argo.tolerations:
        spec["tolerations"] = _tolerations(c)
    spec["volumes"] = [{"name": v, "emptyDir": {}} for v in VOLUMES]
    spec["templates"] = [{"name": ENTRY, "dag": {"tasks": tasks}}, *templates]
    placed = ", ".join(f"{j.platform} ({j.placement.kind})" for j in x.plan.jobs)
    return {"apiVersion": API, "kind": "WorkflowTemplate",
            "metadata": {"name": x.name, "namespace": c.argo.namespace,
                         "labels": labels(c, "release"),
                         "annotations": {"multiarch-ci/config": x.config_path,
                                         "multiarch-ci/platforms": placed,
                                         "multiarch-ci/version": __version__}},
            "spec": spec}


def labels(config: Config, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "multiarch-ci",
            "app.kubernetes.io/part-of": k8s_name(config.project.name)}
