"""`ci export argo` (issue #17): the exported WorkflowTemplate, EventSource and Sensor, and the
example Argo CD Application, validate against the Argo projects' schemas (tests/argo_schemas.py),
and the fields that matter are asserted directly: per-arch nodeSelector and qemu only where the
plan emulates, the DAG's dependencies, every step's `ci` command line (parsed by the real app),
secrets by reference only, image references, byte-identical re-export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from ci.cli import main
from ci.commands.export import FILES, export_argo, run_export
from ci.core import config as cfg
from ci.core.argo_workflow import cluster_plan
from ci.stages.deploy import GUARD_FILE
from tests import argo_schemas
from tests import command_lines as cl

ROOT = Path(__file__).resolve().parents[2]
WINE = ROOT / "examples" / "wine"
CI_IMAGE = "ghcr.io/example/multiarch-ci@sha256:" + "ab" * 32
CLUSTER = {"MACI_MLFLOW__TRACKING_URI": "http://mlflow.mlflow.svc:5000",
           "MACI_DEPLOY__REMOTE": "https://git.example.com/examples/wine-deploy.git"}
MINIMAL = """
[project]
name = "svc"
image = "registry.example.com/team/svc"
platforms = ["linux/amd64", "linux/arm64"]

[argo]
ci_image = "ghcr.io/example/multiarch-ci:1"
"""


def load(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> cfg.Config:
    (tmp_path / "ci.toml").write_text(text)
    return cfg.load(tmp_path / "ci.toml", environ or {}, tmp_path)


def export(config: cfg.Config, path: Path, environ: dict[str, str] | None = None,
           ci_image: str | None = None) -> dict[str, dict[str, Any]]:
    objs = export_argo(config, path, ci_image=ci_image, environ=environ or {})
    return {obj["kind"]: obj for _, obj in objs}


@pytest.fixture(scope="module")
def wine() -> dict[str, dict[str, Any]]:
    config = cfg.load(WINE / "ci.toml", CLUSTER, WINE)
    return export(config, WINE / "ci.toml", CLUSTER, CI_IMAGE)


def templates(wt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in wt["spec"]["templates"]}


def tasks(wt: dict[str, Any], template: str = "release") -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in templates(wt)[template]["dag"]["tasks"]}


def env_of(template: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in template["script"]["env"]}


# --- the objects validate ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["WorkflowTemplate", "EventSource", "Sensor"])
def test_every_exported_object_validates(wine: dict[str, dict[str, Any]], kind: str) -> None:
    assert argo_schemas.problems(wine[kind]) == []


def test_the_workflow_each_trigger_submits_validates(wine: dict[str, dict[str, Any]]) -> None:
    for trigger in wine["Sensor"]["spec"]["triggers"]:
        resource = trigger["template"]["argoWorkflow"]["source"]["resource"]
        assert argo_schemas.problems(resource) == []
        assert resource["spec"]["workflowTemplateRef"] == {"name": "wine-release"}


def test_the_example_application_validates_and_syncs_the_deploy_branch_path() -> None:
    app = YAML(typ="safe", pure=True).load((WINE / "argocd" / "application.yaml").read_text())
    assert argo_schemas.problems(app) == []
    deploy = cfg.load(WINE / "ci.toml", {}, WINE).deploy
    assert deploy is not None
    source = app["spec"]["source"]
    assert source["targetRevision"] == deploy.branch
    assert {str(Path(m).parent) for m in deploy.manifests} == {source["path"]}
    assert not GUARD_FILE.startswith(source["path"] + "/")  # the guard is never applied


def test_the_vendored_copy_validates_them_too(wine: dict[str, dict[str, Any]]) -> None:
    """What a clone without ../shared uses: the same verdicts from the reduced schemas."""
    app = YAML(typ="safe", pure=True).load((WINE / "argocd" / "application.yaml").read_text())
    for obj in (*wine.values(), app):
        assert argo_schemas.problems(obj, folder=argo_schemas.REPO_COPY) == [], obj["kind"]
    bad = json.loads(json.dumps(wine["Sensor"]))
    bad["spec"]["dependencies"][0]["eventNam"] = "x"
    assert argo_schemas.problems(bad, folder=argo_schemas.REPO_COPY) != []


@pytest.mark.parametrize("broken", [
    lambda o: o["spec"]["templates"][1].update(nodeSelectr={"a": "b"}),  # misspelled field
    lambda o: o["spec"].update(entrypoint=["release"]),                   # wrong type
    lambda o: o["spec"]["templates"][0]["dag"]["tasks"][0].pop("name"),   # required field
])
def test_the_schema_check_fails_what_it_must(wine: dict[str, dict[str, Any]], broken: Any) -> None:
    bad = json.loads(json.dumps(wine["WorkflowTemplate"]))
    broken(bad)
    assert argo_schemas.problems(bad) != []


def test_the_vendored_schemas_are_the_upstream_ones_reduced() -> None:
    """With ../shared/argo present, the reduction script turns it into exactly the copy in
    tests/data/argo (so the copy's provenance holds); its README records each file's sha256."""
    import hashlib
    import importlib.util

    readme = (argo_schemas.REPO_COPY / "README.md").read_text()
    for name in ("argo-workflows.schema.json", "argo-events.schema.json",
                 "argo-cd.application.schema.json"):
        data = (argo_schemas.REPO_COPY / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() in readme, name
        assert b'"description"' not in data.replace(b'"description": {', b"")
    if not (argo_schemas.SHARED / "argo-workflows.schema.json").is_file():
        pytest.skip("no ../shared/argo here: nothing to compare the copy with")
    spec = importlib.util.spec_from_file_location("reduce", ROOT / "scripts" / "reduce_argo_schemas.py")
    assert spec is not None and spec.loader is not None
    reduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reduce)
    for name, (file, *_rest) in reduce.SOURCES.items():
        text = (argo_schemas.SHARED / file).read_text()
        assert reduce.render(reduce.reduce(name, text)) == (argo_schemas.REPO_COPY / name).read_text()


# --- the fields that matter ----------------------------------------------------------------


def test_the_dag_is_the_release_order(wine: dict[str, dict[str, Any]]) -> None:
    deps = {n: t.get("dependencies", []) for n, t in tasks(wine["WorkflowTemplate"]).items()}
    assert deps == {
        "plan": [], "train": ["plan"], "job-linux-amd64": ["train"], "job-linux-arm64": ["train"],
        "merge": ["job-linux-amd64", "job-linux-arm64", "train"], "smoke": ["merge"],
        "deploy": ["merge", "smoke", "train"], "promote": ["deploy", "train"]}
    assert next(iter(deps)) == "plan" and wine["WorkflowTemplate"]["spec"]["entrypoint"] == "release"
    assert tasks(wine["WorkflowTemplate"], "smoke")["stress"]["dependencies"] == ["canary"]
    text = json.dumps(wine["WorkflowTemplate"])
    assert "continueOn" not in text and "failFast" not in text  # a failed step stops the DAG


def test_artifacts_flow_from_the_step_that_makes_them(wine: dict[str, dict[str, Any]]) -> None:
    t = tasks(wine["WorkflowTemplate"])
    froms = {n: {a["name"]: a["from"] for a in task.get("arguments", {}).get("artifacts", [])}
             for n, task in t.items()}
    assert froms["train"] == {"plan": "{{tasks.plan.outputs.artifacts.plan}}"}
    assert froms["merge"] == {
        "result-linux-amd64": "{{tasks.job-linux-amd64.outputs.artifacts.result}}",
        "result-linux-arm64": "{{tasks.job-linux-arm64.outputs.artifacts.result}}",
        "gate": "{{tasks.train.outputs.artifacts.gate}}"}
    assert froms["deploy"] == {"merge": "{{tasks.merge.outputs.artifacts.merge}}"}
    tpl = templates(wine["WorkflowTemplate"])
    outs = {n: sorted(a["path"] for a in tp.get("outputs", {}).get("artifacts", []))
            for n, tp in tpl.items()}
    assert outs["plan"] == ["/maci/out/plan.json"] and outs["train"] == ["/maci/out/gate.json"]
    assert outs["merge"] == ["/maci/out/merge.json"]
    assert outs["job-linux-arm64"] == ["/maci/out/result-linux-arm64.json"]


def test_each_job_runs_on_a_node_of_its_arch_and_native_jobs_get_no_qemu(
        wine: dict[str, dict[str, Any]]) -> None:
    tpl = templates(wine["WorkflowTemplate"])
    for arch in ("amd64", "arm64"):
        job = tpl[f"job-linux-{arch}"]
        assert job["nodeSelector"] == {"kubernetes.io/os": "linux", "kubernetes.io/arch": arch}
        assert "initContainers" not in job
        assert job["metadata"]["annotations"]["multiarch-ci/placement"] == "native"
        assert job["sidecars"][0]["securityContext"] == {"privileged": True}  # its own dockerd


def test_a_platform_without_nodes_is_emulated_on_another_node_with_qemu(tmp_path: Path) -> None:
    text = MINIMAL.replace('"linux/arm64"]', '"linux/arm64", "linux/arm/v7"]') + (
        'node_platforms = ["linux/amd64", "linux/arm/v7"]\nnode_selector = { pool = "ci" }\n'
        'tolerations = [{ key = "arch", value = "arm", effect = "NoSchedule" }]\n')
    wt = export(load(text, tmp_path), tmp_path / "ci.toml")["WorkflowTemplate"]
    tpl = templates(wt)
    arm64, armv7 = tpl["job-linux-arm64"], tpl["job-linux-arm-v7"]
    # no arm64 node: the plan's rule (`ci plan`'s) puts the job on the least loaded node that
    # can emulate it (the arm node: amd64 already has its own job), qemu registered first
    plan = cluster_plan(load(text, tmp_path))
    assert plan.job("linux/arm64").placement.runner == "nodes-linux-arm-v7"
    assert arm64["nodeSelector"] == {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm",
                                     "pool": "ci"}
    [init] = arm64["initContainers"]
    assert init["command"] == ["ci", "setup-qemu", "--platform", "linux/arm64"]
    assert init["securityContext"] == {"privileged": True}
    assert arm64["metadata"]["annotations"]["multiarch-ci/placement"] == "emulated"
    # arm/v7 has a node: Kubernetes' arch label says `arm` (there is no variant label)
    assert armv7["nodeSelector"]["kubernetes.io/arch"] == "arm" and "initContainers" not in armv7
    assert "initContainers" not in tpl["job-linux-amd64"]
    assert wt["spec"]["tolerations"] == [{"key": "arch", "operator": "Equal", "value": "arm",
                                          "effect": "NoSchedule"}]
    assert wt["spec"]["nodeSelector"] == {"pool": "ci"}
    assert argo_schemas.problems(wt) == []


def test_every_step_runs_the_ci_command_lines_of_the_gitlab_template(
        wine: dict[str, dict[str, Any]]) -> None:
    tpl = templates(wine["WorkflowTemplate"])
    found: dict[str, list[tuple[str, ...]]] = {}
    for name, t in tpl.items():
        for part in ("script",):
            if part in t:
                invs = cl.from_shell(t[part]["source"], name)
                assert [cl.problem(i) for i in invs if cl.problem(i)] == []
                found[name] = [i.argv for i in invs]
        for init in t.get("initContainers", []):
            assert init["command"][0] == "ci" and cl.check(init["command"][1:]) is None
    assert {n: [a[0] for a in argv] for n, argv in found.items()} == {
        "plan": ["plan"], "train": ["train"], "job-linux-amd64": ["job"],
        "job-linux-arm64": ["job"], "merge": ["merge"], "stress": ["smoke"],
        "deploy": ["deploy"], "promote": ["promote"]}
    merge = found["merge"][0]
    assert merge[-2:] == ("/maci/in/result-linux-amd64.json", "/maci/in/result-linux-arm64.json")
    assert "--model-result" in merge and found["plan"][0][:2] == ("plan", "--matrix")
    assert found["job-linux-arm64"][0][-2:] == ("--model-version", "X")
    assert found["stress"][0][:5] == ("smoke", "--config", "examples/wine/ci.toml", "--url",
                                      "http://X:8080")
    for t in tpl.values():
        if "script" in t:
            assert t["script"]["source"].startswith("set -eu\n")  # the first failure fails it
            assert t["script"]["workingDir"] == "/maci/src"


def test_steps_run_in_the_ci_image_and_the_canary_is_the_published_digest(
        wine: dict[str, dict[str, Any]]) -> None:
    tpl = templates(wine["WorkflowTemplate"])
    images = {t["script"]["image"] for t in tpl.values() if "script" in t}
    assert images == {CI_IMAGE}
    canary = tpl["canary"]
    assert canary["daemon"] is True
    assert canary["container"]["image"] == "127.0.0.1:5000/examples/wine@{{inputs.parameters.index-digest}}"
    assert env_of(tpl["stress"])["REFERENCE"] == canary["container"]["image"]
    assert tasks(wine["WorkflowTemplate"], "smoke")["stress"]["arguments"]["parameters"][0] == {
        "name": "canary-ip", "value": "{{tasks.canary.ip}}"}
    # the pods release the config that was exported: its overrides go into every step
    for t in tpl.values():
        if "script" in t:
            assert {k: env_of(t)[k] for k in CLUSTER} == CLUSTER
            assert env_of(t)["MACI_SOURCE_REF"] == "{{workflow.parameters.ref}}"
            assert env_of(t)["MACI_RUN_ID"] == "{{workflow.name}}"


def test_secrets_are_referenced_never_written(tmp_path: Path) -> None:
    text = MINIMAL + (
        '[publish]\nauth = { username = "ci", password_env = "REGISTRY_PASSWORD" }\n'
        '[mlflow]\ntracking_uri = "https://mlflow.example.com"\ntoken_env = "MLFLOW_TOKEN"\n'
        '[model]\ntrain_command = ["python", "train.py"]\nregistered_model = "svc"\n'
        '[sign]\npublic_key = "cosign.pub"\n'
        '[deploy]\nremote = "https://git.example.com/team/deploy.git"\nmanifests = ["k8s/app.yaml"]\n'
        '[argo.secrets]\ngit_username = "git-creds/user"\ngit_password = "git-creds/token"\n')
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "app.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: svc}\nspec:\n  template:\n"
        "    spec:\n      containers:\n        - name: svc\n"
        "          image: registry.example.com/team/svc:1\n")
    values = {"REGISTRY_PASSWORD": "reg-s3cret", "MLFLOW_TOKEN": "mlf-s3cret",
              "COSIGN_PASSWORD": "cos-s3cret", "MACI_DEPLOY_TOKEN": "dep-s3cret"}
    objs = export(load(text, tmp_path), tmp_path / "ci.toml", values)
    dumped = json.dumps(objs)
    assert not any(v in dumped for v in values.values())
    tpl = templates(objs["WorkflowTemplate"])

    def refs(step: str) -> dict[str, tuple[str, str]]:
        return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                for e in tpl[step]["script"]["env"] if "valueFrom" in e}

    registry, mlflow = ("maci-registry", "password"), ("maci-mlflow", "token")
    assert refs("plan") == {}
    assert refs("train") == {"MLFLOW_TOKEN": mlflow}
    assert refs("job-linux-arm64") == {"REGISTRY_PASSWORD": registry, "MLFLOW_TOKEN": mlflow}
    assert refs("merge") == {"REGISTRY_PASSWORD": registry, "MLFLOW_TOKEN": mlflow,
                             "MACI_COSIGN_KEY": ("maci-cosign", "cosign.key"),
                             "COSIGN_PASSWORD": ("maci-cosign", "password")}
    assert refs("deploy") == {"REGISTRY_PASSWORD": registry,
                              "MACI_DEPLOY_TOKEN": ("maci-deploy", "token")}
    assert refs("promote") == {"MLFLOW_TOKEN": mlflow}
    assert "MACI_SIGN__KEY=/maci/tmp/cosign.key" in tpl["merge"]["script"]["source"]
    assert 'url.https://oauth2:${MACI_DEPLOY_TOKEN}@git.example.com/' in tpl["deploy"]["script"]["source"]
    git = tpl["plan"]["inputs"]["artifacts"][0]["git"]
    assert git["usernameSecret"] == {"name": "git-creds", "key": "user"}
    assert git["passwordSecret"] == {"name": "git-creds", "key": "token"}
    for kind, obj in objs.items():
        assert argo_schemas.problems(obj) == [], kind


def test_without_model_deploy_or_smoke_the_dag_has_only_its_steps(tmp_path: Path) -> None:
    wt = export(load(MINIMAL, tmp_path), tmp_path / "ci.toml")["WorkflowTemplate"]
    deps = {n: t.get("dependencies", []) for n, t in tasks(wt).items()}
    assert deps == {"plan": [], "job-linux-amd64": ["plan"], "job-linux-arm64": ["plan"],
                    "merge": ["job-linux-amd64", "job-linux-arm64"]}
    merge = templates(wt)["merge"]["script"]["source"]
    assert "--model-result" not in merge and "cosign" not in merge
    # no train step to catch a stale template: each job checks the plan itself
    assert "export it again" in templates(wt)["job-linux-amd64"]["script"]["source"]


# --- stable output -------------------------------------------------------------------------


def test_re_export_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CLUSTER.items():
        monkeypatch.setenv(key, value)
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["export", "argo", "--config", str(WINE), "--ci-image", CI_IMAGE,
                 "--output", str(first)]) == 0
    run_export(WINE / "ci.toml", str(second), ci_image=CI_IMAGE)
    assert sorted(p.name for p in first.iterdir()) == sorted(FILES)
    for name in FILES:
        text = (first / name).read_bytes()
        assert text == (second / name).read_bytes(), name
        assert not re.search(rb"20\d\d-\d\d-\d\dT|/tmp/|/root/", text), name  # no time, no machine


def test_stdout_is_one_stream_of_the_same_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CLUSTER.items():
        monkeypatch.setenv(key, value)
    assert main(["export", "argo", "-c", str(WINE / "ci.toml"), "--ci-image", CI_IMAGE]) == 0
    docs = list(YAML(typ="safe", pure=True).load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["WorkflowTemplate", "EventSource", "Sensor"]


# --- refusals: one line, exit 2 ------------------------------------------------------------


@pytest.mark.parametrize(("extra", "environ", "needle"), [
    ("", {"MACI_ARGO__CI_IMAGE": ""}, "argo.ci_image"),
    ('[model]\ntrain_command = ["python", "t.py"]\nregistered_model = "m"\n', {},
     "mlflow.tracking_uri"),
    ('[deploy]\nremote = ".maci/deploy.git"\nmanifests = ["k8s/a.yaml"]\n', {}, "deploy.remote"),
    ('[sign]\nkeyless = true\nidentity = "i"\nissuer = "https://x"\n', {}, "sign.keyless"),
    ("", {"MACI_EMULATION__FALLBACK": "fail", "MACI_ARGO__NODE_PLATFORMS": "linux/amd64"},
     "argo.node_platforms: no node runs linux/arm64"),
    ("", {"MACI_MLFLOW__TRACKING_URI": "https://u:pw@mlflow.example.com"},
     "MACI_MLFLOW__TRACKING_URI: holds credentials"),
])
def test_bad_input_is_refused_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], extra: str,
                                            environ: dict[str, str], needle: str) -> None:
    (tmp_path / "ci.toml").write_text(MINIMAL + extra)
    monkeypatch.chdir(tmp_path)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    assert main(["export", "argo", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "out").exists()


# --- Argo Events ---------------------------------------------------------------------------


def test_the_sensor_submits_for_the_release_branch_and_tags(wine: dict[str, dict[str, Any]]) -> None:
    sensor, source = wine["Sensor"], wine["EventSource"]
    assert set(source["spec"]["github"]) == {"github-push"}
    assert set(source["spec"]["gitlab"]) == {"gitlab-push"}
    assert source["spec"]["github"]["github-push"]["webhookSecret"] == {
        "name": "maci-webhook", "key": "github"}
    assert source["spec"]["gitlab"]["gitlab-push"]["secretToken"] == {
        "name": "maci-webhook", "key": "gitlab"}
    assert source["spec"]["webhook"]["release"]["endpoint"] == "/release"
    deps = {d["name"]: d for d in sensor["spec"]["dependencies"]}
    assert set(deps) == {"github-push", "gitlab-push"}
    for dep in deps.values():
        assert dep["eventSourceName"] == source["metadata"]["name"]
        ref_filter = dep["filters"]["data"][0]
        assert ref_filter == {"path": "body.ref", "type": "string",
                              "value": ["^refs/heads/main$", "^refs/tags/"]}  # publish.latest_on
    params = {t["template"]["name"]: [(p["src"]["dataKey"], p["dest"])
                                      for p in t["template"]["argoWorkflow"]["parameters"]]
              for t in sensor["spec"]["triggers"]}
    assert params["github-release"] == [
        ("body.repository.clone_url", "spec.arguments.parameters.0.value"),
        ("body.after", "spec.arguments.parameters.1.value"),
        ("body.ref", "spec.arguments.parameters.2.value")]
    assert params["gitlab-release"][1] == ("body.checkout_sha", "spec.arguments.parameters.1.value")
    wt_params = [p["name"] for p in wine["WorkflowTemplate"]["spec"]["arguments"]["parameters"]]
    assert wt_params == ["repo", "revision", "ref"]


def test_a_named_repository_limits_the_event_source_to_its_host(tmp_path: Path) -> None:
    text = MINIMAL + 'github_repository = "team/svc"\nwebhook_url = "https://events.example.com"\n'
    objs = export(load(text, tmp_path), tmp_path / "ci.toml")
    spec = objs["EventSource"]["spec"]
    assert "gitlab" not in spec
    assert spec["github"]["github-push"]["repositories"] == [{"owner": "team", "names": ["svc"]}]
    assert spec["github"]["github-push"]["webhook"]["url"] == "https://events.example.com/github"
    assert [d["name"] for d in objs["Sensor"]["spec"]["dependencies"]] == ["github-push"]
    for obj in objs.values():
        assert argo_schemas.problems(obj) == []
