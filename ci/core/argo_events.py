"""Argo Events objects that start the release (pure): an `EventSource` receiving GitHub and
GitLab push webhooks (and the release's own CloudEvents), and a `Sensor` that submits the
WorkflowTemplate for pushes to the release branch (`publish.latest_on`) and for tags.

The git hosts' signatures are checked by the EventSource against Secrets (GitHub's HMAC
`webhookSecret`, GitLab's `secretToken`); no API token is configured, so Argo Events never
edits the repositories' hooks: they are created once, pointing at `<webhook_url>/github` or
`/gitlab`. A branch deletion (GitHub `deleted: true`, GitLab `checkout_sha: null`) starts nothing.
"""

from __future__ import annotations

import re
from typing import Any

from ci.core.argo_workflow import API, PARAMS, Export, labels
from ci.core.config import Config

PORT = 12000


def _secret(ref: str) -> dict[str, str]:
    name, _, key = ref.partition("/")
    return {"name": name, "key": key}


def _hook(config: Config, endpoint: str) -> dict[str, Any]:
    base = config.argo.webhook_url.rstrip("/")
    return {"endpoint": endpoint, "port": str(PORT), "method": "POST",
            "url": base + endpoint if base else ""}


def _hosts(config: Config) -> tuple[bool, bool]:
    """Which git hosts to listen to: the ones named in [argo], both when none is."""
    gh, gl = bool(config.argo.github_repository), bool(config.argo.gitlab_project)
    return (gh or not gl, gl or not gh)


def event_source_name(x: Export) -> str:
    return f"{x.name}-git"


def event_source(x: Export) -> dict[str, Any]:
    c = x.config
    github, gitlab = _hosts(c)
    spec: dict[str, Any] = {"service": {"ports": [{"port": PORT, "targetPort": PORT}]}}
    if github:
        source: dict[str, Any] = {"events": ["push"], "contentType": "json",
                                  "webhook": _hook(c, "/github"),
                                  "webhookSecret": _secret(c.argo.secrets.github_webhook)}
        if c.argo.github_repository:
            owner, _, repo = c.argo.github_repository.partition("/")
            source["repositories"] = [{"owner": owner, "names": [repo]}]
        spec["github"] = {"github-push": source}
    if gitlab:
        lab: dict[str, Any] = {"events": ["PushEvents", "TagPushEvents"],
                               "gitlabBaseURL": c.argo.gitlab_url.rstrip("/"),
                               "webhook": _hook(c, "/gitlab"),
                               "secretToken": _secret(c.argo.secrets.gitlab_webhook)}
        if c.argo.gitlab_project:
            lab["projects"] = [c.argo.gitlab_project]
        spec["gitlab"] = {"gitlab-push": lab}
    # the release's CloudEvent (`[notify] webhooks = ["<webhook_url>/release"]`): a Sensor of
    # the next project can start its own workflow on `dev.maci.release.published`
    spec["webhook"] = {"release": _hook(c, "/release")}
    return {"apiVersion": API, "kind": "EventSource",
            "metadata": {"name": event_source_name(x), "namespace": c.argo.namespace,
                         "labels": labels(c, "events")},
            "spec": spec}


def release_refs(config: Config) -> list[str]:
    """The refs that release (anchored regexes, as Argo Events matches strings): the branch
    that moves `latest`, and every tag; no `latest_on` = tags only."""
    branch = config.publish.latest_on
    return ([f"^refs/heads/{re.escape(branch)}$"] if branch else []) + ["^refs/tags/"]


# (dependency = event name, clone URL, pushed commit, the filter that drops a deletion)
_HOSTS = (
    ("github-push", "body.repository.clone_url", "body.after",
     {"path": "body.deleted", "type": "bool", "value": ["false"]}),
    ("gitlab-push", "body.project.git_http_url", "body.checkout_sha",
     {"path": "body.checkout_sha", "type": "string", "value": ["^[0-9a-f]{40}$"]}),
)


def workflow(x: Export) -> dict[str, Any]:
    """The Workflow a trigger submits: the template by reference, the push as its parameters."""
    return {"apiVersion": API, "kind": "Workflow",
            "metadata": {"generateName": f"{x.name}-", "namespace": x.config.argo.namespace},
            "spec": {"workflowTemplateRef": {"name": x.name},
                     "arguments": {"parameters": [{"name": p, "value": ""} for p in PARAMS]}}}


def sensor(x: Export) -> dict[str, Any]:
    c = x.config
    github, gitlab = _hosts(c)
    wanted = {"github-push": github, "gitlab-push": gitlab}
    dependencies, triggers = [], []
    for dep, clone, commit, alive in _HOSTS:
        if not wanted[dep]:
            continue
        dependencies.append({
            "name": dep, "eventSourceName": event_source_name(x), "eventName": dep,
            "filters": {"data": [{"path": "body.ref", "type": "string",
                                  "value": release_refs(c)}, alive]}})
        sources = (clone, commit, "body.ref")
        triggers.append({"template": {
            "name": dep.replace("-push", "-release"), "conditions": dep,
            "argoWorkflow": {
                "operation": "submit", "source": {"resource": workflow(x)},
                "parameters": [{"src": {"dependencyName": dep, "dataKey": key},
                                "dest": f"spec.arguments.parameters.{i}.value"}
                               for i, key in enumerate(sources)]}}})
    return {"apiVersion": API, "kind": "Sensor",
            "metadata": {"name": f"{x.name}-push", "namespace": c.argo.namespace,
                         "labels": labels(c, "events")},
            "spec": {"template": {"serviceAccountName": c.argo.sensor_service_account},
                     "dependencies": dependencies, "triggers": triggers}}
