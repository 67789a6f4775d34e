"""The release promise, read from the workflow YAML itself: every platform leg builds only after
the model gate passed and embeds the gated version, publish and deploy run only after every leg and
the gate succeeded, qemu only where no native runner is mapped, and the checks below are shown to
catch each way of breaking that. Also the GitHub hardening: no persisted checkout credentials,
re-runnable artifact uploads, no cache where a release is made, no install of an index name.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.workflows import (
    ACTION,
    GITLAB_ROOT,
    GITLAB_TEMPLATE,
    INPUT_REF,
    RELEASE,
    ROOT,
    STATUS_ESCAPES,
    github_files,
    gitlab_documents,
    interpolate,
    jobs_of,
    load,
    parse,
    qemu_step,
    resolve_extends,
    step_with_id,
    steps_running,
    steps_using,
)
from tests.fixtures.workflows import script as script_of

# The leg's `ci job` passes the gated version whenever there is one (empty = the config has no model).
MODEL_FLAG = '${MODEL_VERSION:+--model-version "$MODEL_VERSION"}'


def need(job: dict[str, Any], name: str) -> dict[str, Any]:
    """A GitLab job's `needs:` entry for `name` (by name: the list's order is not part of the promise)."""
    [entry] = [n for n in job["needs"] if isinstance(n, dict) and n.get("job") == name]
    return entry


def drop_need(job: dict[str, Any], name: str) -> None:
    job["needs"] = [n for n in job["needs"] if name not in (n, n.get("job") if isinstance(n, dict) else n)]


def as_list(needs: Any) -> list[str]:
    """`needs:` as job names (GitHub: a string or a list; GitLab: names or {job: ...} maps)."""
    items = [needs] if isinstance(needs, str) else (needs or [])
    return [n["job"] if isinstance(n, dict) else n for n in items]


def github_release_problems(wf: dict[str, Any]) -> list[str]:
    """Why a release workflow could publish or deploy something not fully tested (empty = none)."""
    problems: list[str] = []
    jobs = wf.get("jobs", {})
    merge_jobs = [n for n, j in jobs.items() if steps_running(j, "ci merge")]
    deploy_jobs = [n for n, j in jobs.items() if steps_running(j, "ci deploy")]
    leg_jobs = [n for n, j in jobs.items() if steps_running(j, "ci job")]
    train_jobs = [n for n, j in jobs.items() if steps_running(j, "ci train")]
    if len(merge_jobs) != 1 or not leg_jobs or not train_jobs:
        return [f"expected one merge job, legs and a train job; got merge={merge_jobs} legs={leg_jobs}"
                f" train={train_jobs}"]
    for name in merge_jobs + deploy_jobs:
        job = jobs[name]
        cond = str(job.get("if", ""))
        if STATUS_ESCAPES.search(cond) or "!cancelled" in cond:
            problems.append(f"{name}: `if: {cond}` runs it after a failed or skipped dependency")
        for step in job.get("steps", []):
            if STATUS_ESCAPES.search(str(step.get("if", ""))) and any(
                word in str(step.get("run", "")) for word in ("ci merge", "ci deploy", "ci promote")
            ):
                problems.append(f"{name}: a publishing step has `if: {step['if']}`")
        if job.get("continue-on-error"):
            problems.append(f"{name}: continue-on-error")
    needs = as_list(jobs[merge_jobs[0]].get("needs"))
    for required in leg_jobs + train_jobs:
        if required not in needs:
            problems.append(f"{merge_jobs[0]} does not need {required}")
    for name in leg_jobs + train_jobs:
        if jobs[name].get("continue-on-error"):
            problems.append(f"{name}: continue-on-error lets a failed leg count as passed")
    for name in leg_jobs:
        # The image embeds the registered model: a leg must wait for the gate and take its version.
        leg = jobs[name]
        for required in train_jobs:
            if required not in as_list(leg.get("needs")):
                problems.append(f"{name} does not need {required}: it builds before the gate")
            if STATUS_ESCAPES.search(str(leg.get("if", ""))):
                problems.append(f"{name}: `if: {leg['if']}` builds after a rejected gate")
        source = [f"needs.{t}.outputs.model-version" for t in train_jobs]
        if not any(s in str(leg.get("env", {}).get("MODEL_VERSION", "")) for s in source):
            problems.append(f"{name}: MODEL_VERSION does not come from the train job's output")
        if not all(MODEL_FLAG in str(s["run"]) for s in steps_running(leg, "ci job")):
            problems.append(f"{name}: `ci job` does not pass --model-version")
    for name in deploy_jobs:
        if merge_jobs[0] not in as_list(jobs[name].get("needs")):
            problems.append(f"{name} does not need {merge_jobs[0]}")
        runs = [str(s.get("run", "")) for s in jobs[name].get("steps", [])]
        deploy_at = next((i for i, r in enumerate(runs) if "ci deploy" in r), -1)
        promote_at = next((i for i, r in enumerate(runs) if "ci promote" in r), -1)
        if promote_at != -1 and promote_at < deploy_at:
            problems.append(f"{name}: promote runs before deploy")
    for name in leg_jobs:
        for step in steps_running(jobs[name], "setup-qemu"):
            if "matrix.qemu" not in str(step.get("if", "")):
                problems.append(f"{name}: qemu is set up even on a native runner")
        if jobs[name].get("strategy", {}).get("fail-fast") is None:
            problems.append(f"{name}: strategy.fail-fast is not set explicitly")
    return problems


def gitlab_release_problems(cfg: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    jobs = {k: v for k, v in cfg.items() if isinstance(v, dict)}

    def job(name: str) -> dict[str, Any]:
        return resolve_extends(jobs, name)

    def runs(j: dict[str, Any], needle: str) -> bool:
        return any(needle in str(line) for line in j.get("script", []))

    names = [n for n in jobs if not n.startswith(".")]
    legs = [n for n in names if runs(job(n), "ci job")]
    merges = [n for n in names if runs(job(n), "ci merge")]
    deploys = [n for n in names if runs(job(n), "ci deploy")]
    trains = [n for n in names if runs(job(n), "ci train")]
    if len(legs) != 1 or len(merges) != 1 or len(deploys) != 1 or len(trains) != 1:
        return [f"expected one build, train, publish, deploy job: {legs} {trains} {merges} {deploys}"]
    for name in legs + trains:
        if job(name).get("allow_failure"):
            problems.append(f"{name}: allow_failure lets a failed leg count as passed")
    for name in merges + deploys:
        j = job(name)
        if j.get("when") not in (None, "on_success") or j.get("allow_failure"):
            problems.append(f"{name}: runs when its needs failed (when={j.get('when')})")
        rules = j.get("rules") or []
        ifs = [r.get("if", "") for r in rules]
        if not rules or any(not i for i in ifs) or any(r.get("when") not in (None, "on_success")
                                                         for r in rules):
            problems.append(f"{name}: rules must limit it to the default branch or tags: {rules}")
        for cond in ifs:
            if "CI_COMMIT_TAG" not in cond and "$CI_DEFAULT_BRANCH" not in cond:
                problems.append(f"{name}: rule {cond!r} is neither default branch nor tag")
    mneeds = as_list(job(merges[0]).get("needs"))
    for required in legs + trains:
        if required not in mneeds:
            problems.append(f"{merges[0]} does not need {required}")
    # The image embeds the gated model: the legs wait for train and read its dotenv MODEL_VERSION.
    stages = cfg.get("stages", [])
    leg, train = job(legs[0]), job(trains[0])
    lneeds = {(n["job"] if isinstance(n, dict) else n): n for n in leg.get("needs", [])}
    if trains[0] not in lneeds:
        problems.append(f"{legs[0]} does not need {trains[0]}: it builds before the gate")
    elif isinstance(lneeds[trains[0]], dict) and lneeds[trains[0]].get("artifacts") is False:
        problems.append(f"{legs[0]} does not get {trains[0]}'s dotenv (artifacts: false): no MODEL_VERSION")
    if leg.get("stage") not in stages or train.get("stage") not in stages or (
            stages.index(train["stage"]) >= stages.index(leg["stage"])):
        problems.append(f"stage {train.get('stage')} must come before {leg.get('stage')} in {stages}")
    if not (train.get("artifacts") or {}).get("reports", {}).get("dotenv"):
        problems.append(f"{trains[0]}: no dotenv report carrying MODEL_VERSION")
    if not any("ci job" in str(s) and MODEL_FLAG in str(s) for s in leg.get("script", [])):
        problems.append(f"{legs[0]}: `ci job` does not pass --model-version")
    dneeds = as_list(job(deploys[0]).get("needs"))
    if merges[0] not in dneeds:
        problems.append(f"{deploys[0]} does not need {merges[0]}")
    # The alias moves only after the deploy commit landed.
    for name in (n for n in names if runs(job(n), "ci promote")):
        if deploys[0] not in as_list(job(name).get("needs")) and name != deploys[0]:
            problems.append(f"{name} does not need {deploys[0]}: it promotes before the deploy")
        if not job(name).get("rules"):
            problems.append(f"{name}: rules must limit it to the default branch or tags")
    if not job(deploys[0]).get("resource_group"):
        problems.append(f"{deploys[0]}: no resource_group")
    return problems



def test_github_release_publishes_only_after_every_leg_and_the_gate() -> None:
    wf = load(RELEASE)
    assert github_release_problems(wf) == []
    jobs = wf["jobs"]
    assert jobs["publish"].get("if") is None  # default success(): every need succeeded
    assert set(jobs["publish"]["needs"]) == {"plan", "build", "train"}
    assert "always()" not in RELEASE.read_text().split("\n  publish:")[1]
    assert "publish" in jobs["deploy"]["needs"]
    # The legs build after the gate and embed its version; train itself waits only for the plan.
    assert jobs["build"]["needs"] == ["plan", "train"] and jobs["build"].get("if") is None
    assert jobs["train"]["needs"] == "plan"
    assert jobs["build"]["env"]["MODEL_VERSION"] == "${{ needs.train.outputs.model-version }}"
    assert "mlflow-token" in jobs["build"]["env"]["MLFLOW_TRACKING_TOKEN"]


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda j: j["publish"].__setitem__("if", "always()"), "runs it after a failed"),
        (lambda j: j["publish"].__setitem__("if", "${{ !cancelled() }}"), "runs it after a failed"),
        (lambda j: j["publish"]["needs"].remove("build"), "does not need build"),
        (lambda j: j["publish"]["needs"].remove("train"), "does not need train"),
        (lambda j: qemu_step(j["build"]).pop("if"), "qemu is set up even on a native runner"),
        (lambda j: j["build"].__setitem__("continue-on-error", True), "continue-on-error"),
        (lambda j: j["deploy"]["needs"].remove("publish"), "does not need publish"),
        (lambda j: j["build"]["needs"].remove("train"), "build does not need train"),
        (lambda j: j["build"].__setitem__("needs", "plan"), "build does not need train"),
        (lambda j: j["build"].__setitem__("if", "${{ always() }}"), "builds after a rejected gate"),
        (lambda j: j["build"]["env"].pop("MODEL_VERSION"), "MODEL_VERSION does not come from"),
        (lambda j: steps_running(j["build"], "ci job")[0].__setitem__(
            "run", 'ci job --platform "$PLATFORM" --output "$RESULT"'), "does not pass --model-version"),
    ],
)
def test_the_promise_check_catches_a_broken_release(
    mutation: Callable[[dict[str, Any]], None], expected: str
) -> None:
    wf = copy.deepcopy(load(RELEASE))
    mutation(wf["jobs"])
    assert any(expected in p for p in github_release_problems(wf)), github_release_problems(wf)


def test_github_release_inputs_secrets_and_hygiene() -> None:
    wf = load(RELEASE)
    call = wf["on"]["workflow_call"]
    assert {"config", "platforms", "runners", "image", "python-version"} <= set(call["inputs"])
    assert {"registry-password", "mlflow-token"} <= set(call["secrets"])
    assert json.loads(call["inputs"]["runners"]["default"]) == {
        "linux/amd64": "ubuntu-24.04", "linux/arm64": "ubuntu-24.04-arm"}
    assert wf["concurrency"] == {"group": "release-${{ github.ref }}", "cancel-in-progress": False}
    assert wf["permissions"] == {"contents": "read"}
    for name, job in wf["jobs"].items():
        assert "permissions" in job, f"{name} has no explicit permissions"
        if name != "deploy":
            assert job["permissions"].get("contents") == "read", name
        for step in job.get("steps", []):
            script = str(step.get("run", ""))
            # Values reach scripts through env only: no injection, secrets stay masked env vars.
            assert "${{ secrets." not in script and "${{ inputs." not in script, (name, step)
        summaries = [s for s in job["steps"] if "GITHUB_STEP_SUMMARY" in str(s.get("run", ""))]
        assert summaries, f"{name} writes no step summary"
    leg = wf["jobs"]["build"]
    assert leg["runs-on"] == "${{ matrix.runner }}"
    assert leg["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    job_step = steps_running(leg, "ci job")[0]["run"]
    assert '--platform "$PLATFORM"' in job_step and '--output "$RESULT"' in job_step


def test_gitlab_release_publishes_only_after_every_leg_and_the_gate() -> None:
    header, _, body = gitlab_documents(GITLAB_TEMPLATE)
    assert header is not None
    cfg = parse(interpolate(body, header))
    assert gitlab_release_problems(cfg) == []
    stages = cfg["stages"]
    assert stages[:5] == ["test", "train", "build", "publish", "deploy"], stages
    build = resolve_extends(cfg, "maci-build")
    assert build["tags"] == ["$RUNNER_TAG"]
    matrix = {e["PLATFORM"]: e["RUNNER_TAG"] for e in build["parallel"]["matrix"]}
    assert matrix == {"linux/amd64": "saas-linux-small-amd64", "linux/arm64": "saas-linux-small-arm64"}
    assert build["artifacts"]["reports"]["junit"] == "junit-*.xml"
    script = "\n".join(build["script"])
    assert re.search(r'if \[ "\$kind" != native \]; then[^f]*ci setup-qemu', script), script
    assert {"job": "maci-train", "artifacts": True} in build["needs"]
    assert MODEL_FLAG in script
    train = resolve_extends(cfg, "maci-train")
    assert train["artifacts"]["reports"] == {"dotenv": "maci-train.env", "metrics": "metrics.txt"}
    publish = resolve_extends(cfg, "maci-publish")
    assert publish["artifacts"]["reports"] == {"dotenv": "maci-publish.env"}
    deploy = resolve_extends(cfg, "maci-deploy")
    assert deploy["resource_group"] == deploy["environment"]["name"] == "production"
    assert '--index "$INDEX_DIGEST"' in script_of(cfg, "maci-deploy")
    promote = resolve_extends(cfg, "maci-promote")
    assert stages.index(promote["stage"]) > stages.index(deploy["stage"])
    assert "ci promote" in "\n".join(promote["script"])
    merge = script_of(cfg, "maci-publish")
    assert "--model-result gate.json" in merge and "${gated:+" in merge


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda c: c["maci-publish"].__setitem__("when", "always"), "runs when its needs failed"),
        (lambda c: drop_need(c["maci-publish"], "maci-build"), "does not need maci-build"),
        (lambda c: drop_need(c["maci-publish"], "maci-train"), "does not need maci-train"),
        (lambda c: c["maci-build"].__setitem__("allow_failure", True), "allow_failure"),
        (lambda c: c[".maci-release-rules"]["rules"].append({"if": "$CI_MERGE_REQUEST_IID"}),
         "neither default branch nor tag"),
        (lambda c: c["maci-deploy"].pop("resource_group"), "no resource_group"),
        (lambda c: drop_need(c["maci-promote"], "maci-deploy"), "promotes before the deploy"),
        (lambda c: drop_need(c["maci-build"], "maci-train"), "maci-build does not need maci-train"),
        (lambda c: need(c["maci-build"], "maci-train").__setitem__("artifacts", False), "no MODEL_VERSION"),
        (lambda c: c.__setitem__("stages", ["test", "build", "train", "publish", "deploy"]),
         "stage train must come before build"),
        (lambda c: c["maci-train"]["artifacts"]["reports"].pop("dotenv"), "no dotenv report"),
        (lambda c: c["maci-build"]["script"].__setitem__(-1, "ci job --platform $PLATFORM"),
         "does not pass --model-version"),
    ],
)
def test_the_gitlab_promise_check_catches_a_broken_pipeline(
    mutation: Callable[[dict[str, Any]], None], expected: str
) -> None:
    header, _, body = gitlab_documents(GITLAB_TEMPLATE)
    assert header is not None
    cfg = parse(interpolate(body, header))
    mutation(cfg)
    assert any(expected in p for p in gitlab_release_problems(cfg)), gitlab_release_problems(cfg)


def test_gitlab_template_inputs_are_declared_and_the_root_passes_known_ones() -> None:
    header, _, body = gitlab_documents(GITLAB_TEMPLATE)
    assert header is not None
    declared = set(header["spec"]["inputs"])
    used = set(INPUT_REF.findall(body))
    assert used <= declared, f"undeclared inputs: {used - declared}"
    assert declared - used == set(), f"declared but unused: {declared - used}"
    root = load(GITLAB_ROOT)
    local = [i for i in root["include"] if i.get("local") == "templates/gitlab/release.gitlab-ci.yml"]
    assert len(local) == 1
    assert set(local[0]["inputs"]) <= declared


def test_gitlab_input_check_catches_an_undeclared_input() -> None:
    header, _, body = gitlab_documents(GITLAB_TEMPLATE)
    assert header is not None
    with pytest.raises(KeyError, match="confg"):
        interpolate(body + "\nx: {script: [echo $[[ inputs.confg ]]]}\n", header)


def test_the_root_pipeline_hands_the_embedded_mlflow_store_to_the_build_jobs() -> None:
    """Without a shared MLflow server the legs read the gated version from train's store."""
    from ci.core import config

    conf = config.load(ROOT / "examples" / "wine" / "ci.toml", {}, ROOT)
    assert conf.mlflow.tracking_uri is None  # the embedded store is the one train writes
    state = conf.state_path.relative_to(ROOT).as_posix()
    assert conf.tracking_uri() == f"sqlite:///{ROOT / state / 'mlflow.db'}"
    paths = load(GITLAB_ROOT)["maci-train"]["artifacts"]["paths"]
    assert {"gate.json", f"{state}/mlflow.db", f"{state}/mlartifacts/"} <= set(paths)


# --------------------------------------------------------------- GitHub hardening (issue #13)

# A pip argument naming the unclaimed PyPI project (bare, pinned or with extras).
BARE_NAME = re.compile(r"^multiarch[-_]ci(\[[^\]]*\])?([=<>!~].*)?$", re.I)
MODEL_RESULT_FLAG = '${MODEL_RESULT:+--model-result "$MODEL_RESULT"}'


def triggers(doc: dict[str, Any]) -> dict[str, Any]:
    on = doc.get("on", {})
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return dict(on or {})


def makes_releases(doc: dict[str, Any]) -> bool:
    """Runs for a tag or a release; a reusable workflow counts: its callers run it on tags."""
    on = triggers(doc)
    if "release" in on or "workflow_call" in on:
        return True
    if "push" not in on:
        return False
    push = on["push"] or {}
    # Only a branch filter = tag pushes do not run it; no filter at all = they do.
    return bool({"tags", "tags-ignore"} & set(push)) or not ({"branches", "branches-ignore"} & set(push))


def pip_arguments(script: str) -> list[str]:
    args: list[str] = []
    for line in script.splitlines():
        if "pip install" in line:
            words = line.split("pip install", 1)[1].split()
            args += [w.strip("\"'") for w in words if not w.startswith("-")]
    return args


def github_hardening_problems(files: dict[str, dict[str, Any]]) -> list[str]:
    """Why the GitHub files leak a token, break a re-run, risk a poisoned cache in a release, or
    install whatever owns the PyPI name (empty = none)."""
    problems: list[str] = []
    for fname, doc in files.items():
        upload_names: list[str] = []
        for jname, job in jobs_of(doc).items():
            where = f"{fname}:{jname}"
            for step in steps_using(job, "actions/checkout"):
                if (step.get("with") or {}).get("persist-credentials") is not False:
                    problems.append(f"{where}: checkout without persist-credentials: false")
            for step in steps_using(job, "actions/upload-artifact"):
                w = step.get("with") or {}
                if w.get("overwrite") is not True:
                    problems.append(f"{where}: upload-artifact {w.get('name')} without overwrite: true")
                name = str(w.get("name", ""))
                if "strategy" in job and "${{ matrix." not in name:
                    problems.append(f"{where}: artifact {name!r} has the same name in every leg")
                upload_names.append(name)
            if makes_releases(doc):
                if steps_using(job, "actions/cache"):
                    problems.append(f"{where}: actions/cache in a workflow that makes releases")
                for step in steps_using(job, "actions/setup-python"):
                    if "cache" in (step.get("with") or {}):
                        problems.append(f"{where}: setup-python cache in a workflow that makes releases")
            for step in job.get("steps", []):
                for arg in pip_arguments(str(step.get("run", ""))):
                    if BARE_NAME.match(arg):
                        problems.append(f"{where}: installs the index name {arg!r}")
                value = str((step.get("env") or {}).get("MACI_PACKAGE", "${{ }}"))
                if "${{" not in value:
                    problems.append(f"{where}: MACI_PACKAGE is the literal {value!r}")
        if len(set(upload_names)) != len(upload_names):
            problems.append(f"{fname}: two uploads share an artifact name: {upload_names}")
        # An action's inputs, or a reusable workflow's.
        inputs = doc.get("inputs") or (triggers(doc).get("workflow_call") or {}).get("inputs") or {}
        package = inputs.get("package")
        if package is not None and package.get("default") != "":
            problems.append(f"{fname}: the package input defaults to {package.get('default')!r}, not ''")
    return problems


def test_the_github_files_are_hardened() -> None:
    files = github_files()
    assert {"ci.yml", "release.yml", ACTION.relative_to(ROOT).as_posix()} <= set(files)
    assert github_hardening_problems(files) == []
    # The checks had something to look at.
    jobs = [j for doc in files.values() for j in jobs_of(doc).values()]
    assert len([s for j in jobs for s in steps_using(j, "actions/checkout")]) >= 8
    assert len([s for j in jobs for s in steps_using(j, "actions/upload-artifact")]) == 2
    assert not makes_releases(files["ci.yml"]) and makes_releases(files["release.yml"])


def _release(files: dict[str, Any]) -> dict[str, Any]:
    jobs: dict[str, Any] = files["release.yml"]["jobs"]
    return jobs


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda f: steps_using(_release(f)["deploy"], "actions/checkout")[0].pop("with"),
         "deploy: checkout without persist-credentials"),
        (lambda f: steps_using(jobs_of(f["ci.yml"])["test"], "actions/checkout")[0]["with"].__setitem__(
            "persist-credentials", "false"), "test: checkout without persist-credentials"),
        (lambda f: steps_using(_release(f)["build"], "actions/upload-artifact")[0]["with"].pop("overwrite"),
         "build: upload-artifact result-${{ matrix.slug }} without overwrite"),
        (lambda f: steps_using(_release(f)["build"], "actions/upload-artifact")[0]["with"].__setitem__(
            "name", "result"), "has the same name in every leg"),
        (lambda f: steps_using(_release(f)["build"], "actions/upload-artifact")[0]["with"].__setitem__(
            "name", "gate"), "two uploads share an artifact name"),
        (lambda f: f["ci.yml"]["on"]["push"].__setitem__("tags", ["v*"]),
         "test: actions/cache in a workflow that makes releases"),
        (lambda f: f["ci.yml"].__setitem__("on", "push"), "actions/cache in a workflow that makes releases"),
        (lambda f: steps_using(_release(f)["train"], "actions/setup-python")[0]["with"].__setitem__(
            "cache", "pip"), "train: setup-python cache"),
        (lambda f: steps_running(_release(f)["publish"], "pip install")[0]["env"].__setitem__(
            "MACI_PACKAGE", "multiarch-ci"), "MACI_PACKAGE is the literal 'multiarch-ci'"),
        (lambda f: steps_running(_release(f)["deploy"], "pip install")[0].__setitem__(
            "run", "pip install -q multiarch-ci==0.1.0"), "installs the index name 'multiarch-ci==0.1.0'"),
        (lambda f: f["release.yml"]["on"]["workflow_call"]["inputs"]["package"].__setitem__(
            "default", "multiarch-ci"), "release.yml: the package input defaults to 'multiarch-ci'"),
        (lambda f: f[ACTION.relative_to(ROOT).as_posix()]["inputs"]["package"].__setitem__(
            "default", "multiarch-ci"), "action.yml: the package input defaults to 'multiarch-ci'"),
    ],
)
def test_the_hardening_check_catches_a_regression(
    mutation: Callable[[dict[str, Any]], None], expected: str
) -> None:
    files = copy.deepcopy(github_files())
    mutation(files)
    problems = github_hardening_problems(files)
    assert any(expected in p for p in problems), problems


def test_keyless_signing_is_on_by_default_and_deploy_verifies_the_workflow_identity() -> None:
    wf = load(RELEASE)
    assert wf["on"]["workflow_call"]["inputs"]["sign"]["default"] == "keyless"
    jobs = wf["jobs"]
    assert jobs["plan"]["outputs"]["workflow-ref"] == "${{ steps.package.outputs.workflow-ref }}"
    [merge] = steps_running(jobs["publish"], "ci merge")
    assert 'export MACI_SIGN__KEYLESS=true' in merge["run"]
    assert merge["env"]["MACI_SIGN_MODE"] == "${{ inputs.sign }}"
    [deploy] = steps_running(jobs["deploy"], "ci deploy")
    assert deploy["env"]["WORKFLOW_REF"] == "${{ needs.plan.outputs.workflow-ref }}"
    assert 'MACI_SIGN__IDENTITY="https://github.com/$WORKFLOW_REF"' in deploy["run"]
    assert "token.actions.githubusercontent.com" in deploy["run"]
    for job in ("publish", "deploy"):
        [install] = steps_running(jobs[job], "go install github.com/sigstore/cosign")
        assert install["if"] == "inputs.sign == 'keyless'"
        order = [s.get("name") for s in jobs[job]["steps"]]
        user = "Merge the legs into one index and move the release tags" if job == "publish" \
            else "Deploy (commit the index digest to the deploy branch)"
        assert order.index(install["name"]) < order.index(user)


def test_every_release_job_installs_the_package_the_plan_resolved() -> None:
    wf = load(RELEASE)
    jobs = wf["jobs"]
    plan = jobs["plan"]
    assert plan["permissions"] == {"contents": "read", "id-token": "write"}
    assert plan["outputs"]["package"] == "${{ steps.package.outputs.package }}"
    resolve = step_with_id(plan, "package")
    assert resolve["shell"] == "python" and resolve["env"]["MACI_PACKAGE"] == "${{ inputs.package }}"
    order = [s.get("id") or s.get("name") for s in plan["steps"]]
    assert order.index("package") < order.index("Install multiarch-ci") < order.index("Plan")
    [install] = steps_running(plan, "pip install")
    assert install["env"]["MACI_PACKAGE"] == "${{ steps.package.outputs.package }}"
    for name, job in jobs.items():
        if name == "plan":
            continue
        # only publish mints a token: the keyless signature's certificate (input sign)
        assert ("id-token" in job["permissions"]) == (name == "publish"), \
            f"{name} may mint OIDC tokens"
        assert "plan" in job["needs"], name
        [install] = steps_running(job, "pip install")
        assert install["env"]["MACI_PACKAGE"] == "${{ needs.plan.outputs.package }}", name
    # The caller is shown pinned to a commit and granting the token.
    header = RELEASE.read_text().split("\nname:", 1)[0]
    assert "uses: OWNER/multiarch-ci/.github/workflows/release.yml@<commit-sha>" in header
    assert "id-token: write" in header and "v0" in header


def test_the_composite_action_installs_its_own_checkout_by_default() -> None:
    action = load(ACTION)
    assert action["inputs"]["package"]["default"] == ""
    [install] = [s for s in action["runs"]["steps"] if s.get("id") == "install"]
    assert install["env"]["MACI_PACKAGE"] == "${{ inputs.package }}"
    assert '"$GITHUB_ACTION_PATH/../../.."' in install["run"]


def test_the_release_steps_call_ci_as_it_is_now() -> None:
    jobs = load(RELEASE)["jobs"]
    [plan] = steps_running(jobs["plan"], "ci plan")
    assert "ci plan --json --matrix --config" in plan["run"]
    [deploy] = steps_running(jobs["deploy"], "ci deploy")
    assert re.search(r'--index "\$INDEX_DIGEST"', deploy["run"]) and "--index-digest" not in deploy["run"]
    # train uploads the gate result; publish downloads it and hands it to `ci merge` only with a model.
    [upload] = [s for s in steps_using(jobs["train"], "actions/upload-artifact")
                if s["with"]["path"] == "gate.json"]
    assert "hashFiles('gate.json')" in upload["if"] and "!cancelled()" in upload["if"]
    [download] = [s for s in steps_using(jobs["publish"], "actions/download-artifact")
                  if s["with"].get("name") == upload["with"]["name"]]
    assert download["if"] == "needs.plan.outputs.model == 'true'"
    [merge] = steps_running(jobs["publish"], "ci merge")
    assert MODEL_RESULT_FLAG in merge["run"]
    assert merge["env"]["MODEL_RESULT"] == "${{ needs.plan.outputs.model == 'true' && 'gate.json' || '' }}"
    order = jobs["publish"]["steps"]
    assert order.index(download) < order.index(merge)
