"""Hostile paths, remotes and branches in the config are refused at load time (issue #14,
item 5): exit 2, one line naming the dotted field and the value, and nothing written —
no state dir, no clone, no file. Real temp directories and the real CLI, nothing patched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ci.adapters.state_dir import check_state_dir
from ci.cli import main
from ci.core import config as cfg
from ci.core.errors import ConfigError, UsageError
from ci.core.paths import ref_problem

IMAGE = "127.0.0.1:5000/team/svc"
BASE = f'[project]\nname = "svc"\nimage = "{IMAGE}"\n'
DIGEST = "sha256:" + "1" * 64


def deploy_toml(manifests: list[str] | None = None, remote: str = "deploy.git",
                branch: str = "main") -> str:
    return (BASE + f"[deploy]\nremote = {json.dumps(remote)}\nbranch = {json.dumps(branch)}\n"
            f"manifests = {json.dumps(manifests or ['k8s/deployment.yaml'])}\n")


def refused(text: str, root: str = "/srv/app") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        cfg.loads(text, source="ci.toml", root=root)
    assert info.value.exit_code == 2
    assert all(len(line.splitlines()) == 1 for line in info.value.lines())
    return info.value


def only_problem(text: str) -> tuple[str, object, str]:
    error = refused(text)
    (problem,) = error.problems
    return problem.path, problem.value, problem.reason


# ---------------------------------------------------------------- the cases of the report


@pytest.mark.parametrize("manifest", ["../outside/x.yaml", "/etc/passwd", "../../../etc/passwd",
                                      "k8s/../../x.yaml", "C:/deploy/x.yaml", "", "."])
def test_a_manifest_outside_the_deploy_repository_is_refused(manifest: str) -> None:
    path, value, reason = only_problem(deploy_toml(["k8s/ok.yaml", manifest]))
    assert (path, value) == ("deploy.manifests[1]", manifest)
    assert "deploy repository" in reason or "empty" in reason


def test_the_line_names_the_field_and_the_value() -> None:
    [line] = refused(deploy_toml(["../../../etc/passwd"])).lines()
    assert line == ("config error: ci.toml: deploy.manifests[0] = '../../../etc/passwd': must stay "
                    "inside the deploy repository (a relative path without '..' escaping it)")


@pytest.mark.parametrize("remote", ["--upload-pack=touch /tmp/x", "-oProxyCommand=x",
                                    "ext::sh -c touch% /tmp/x", "repo\n--upload-pack=x",
                                    "repo\x00x", "  --upload-pack=x"])
def test_a_remote_git_would_read_as_an_option_or_a_command_is_refused(remote: str) -> None:
    path, value, _ = only_problem(deploy_toml(remote=remote))
    assert path == "deploy.remote" and value == remote


def test_a_remote_from_the_environment_is_checked_too() -> None:
    with pytest.raises(ConfigError) as info:
        cfg.loads(deploy_toml(), environ={"MACI_DEPLOY__REMOTE": "--upload-pack=touch /tmp/x"})
    assert [p.path for p in info.value.problems] == ["deploy.remote"]


@pytest.mark.parametrize("branch", ["-x", "--force", "a..b", "a b", "x.lock", ".hidden", "a/",
                                    "/a", "a//b", "a@{1}", "a~1", "a^", "a:b", "a\\b", "a*",
                                    "a?", "a[b", "x.", "@", "HEAD", "", "a\x01b", "a/.b"])
def test_a_branch_must_be_a_git_branch_name(branch: str) -> None:
    path, value, _ = only_problem(deploy_toml(branch=branch))
    assert (path, value) == ("deploy.branch", branch)


@pytest.mark.parametrize("branch", ["main", "release/1.2", "feature/foo-bar", "v1.0", "a@b", "é"])
def test_ordinary_branches_are_accepted(branch: str) -> None:
    c = cfg.loads(deploy_toml(branch=branch))
    assert c.deploy is not None and c.deploy.branch == branch


def test_latest_on_is_a_branch_name_or_empty() -> None:
    assert cfg.loads(BASE + '[publish]\nlatest_on = ""\n').publish.latest_on == ""
    assert only_problem(BASE + '[publish]\nlatest_on = "-x"\n')[0] == "publish.latest_on"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "/", ".", "-", "@", "{", "~", "^", ":", "?", "*",
                                 "[", "\\", " ", "\x01", "\x7f", ".lock", "é"]),
                min_size=1, max_size=6).map("".join))
def test_branch_rules_agree_with_git_check_ref_format(name: str) -> None:
    git = shutil.which("git")
    if git is None or name == "@":  # `--branch @` is git's shorthand for HEAD's branch
        return
    run = subprocess.run([git, "check-ref-format", "--branch", name], capture_output=True,
                         cwd="/", check=False)
    assert (run.returncode == 0) == (ref_problem(name) is None), name


# ---------------------------------------------------------------- project paths


@pytest.mark.parametrize(("section", "key", "value", "where"), [
    ("project", "state_dir", "../state", "project.state_dir"),
    ("project", "state_dir", "/var/lib/maci", "project.state_dir"),
    ("project", "state_dir", "a\x00b", "project.state_dir"),
    ("project", "state_dir", "", "project.state_dir"),
    ("build", "context", "../elsewhere", "build.context"),
    ("build", "context", "/", "build.context"),
    ("build", "dockerfile", "/etc/Dockerfile", "build.dockerfile"),
    ("build", "dockerfile", "../Dockerfile", "build.dockerfile"),
    ("build", "dockerfile", ".", "build.dockerfile"),
    ("build", "ca_bundle", "../ca.pem", "build.ca_bundle"),
    ("build", "ca_bundle", "certs/ca.pem,type=env", "build.ca_bundle"),
    ("test", "junit_path", "", "test.junit_path"),
    ("test", "junit_path", "/tmp/j\nx.xml", "test.junit_path"),
])
def test_a_project_path_that_leaves_the_project_is_refused(section: str, key: str, value: str,
                                                           where: str) -> None:
    text = BASE.replace("[project]\n", "[project]\n" + f"{key} = {json.dumps(value)}\n") \
        if section == "project" else BASE + f"[{section}]\n{key} = {json.dumps(value)}\n"
    path, shown, _ = only_problem(text)
    assert (path, shown) == (where, value)


MODEL = BASE + '[model]\ntrain_command = "python train.py"\nregistered_model = "m"\n'


@pytest.mark.parametrize(("extra", "where"), [
    ('workdir = "../x"\n', "model.workdir"),
    ('workdir = "/srv"\n', "model.workdir"),
    ('inputs = ["train.py", "../secrets.txt"]\n', "model.inputs[1]"),
    ('inputs = ["/etc/passwd"]\n', "model.inputs[0]"),
    ('workdir = "sub"\ninputs = ["../../x/*.csv"]\n', "model.inputs[0]"),
    ('inputs = ["data/\\u0000.csv"]\n', "model.inputs[0]"),
    ('inputs = [""]\n', "model.inputs[0]"),
    ('python = "bin/py\\u0000"\n', "model.python"),
    ('[model.container]\ncontext = "a\\u0000"\n', "model.container.context"),
    ('[model.container]\ndockerfile = "D\\nx"\n', "model.container.dockerfile"),
])
def test_model_paths_stay_in_the_project(extra: str, where: str) -> None:
    assert only_problem(MODEL + extra)[0] == where


def test_valid_nested_paths_are_accepted_and_normalised() -> None:
    c = cfg.loads(deploy_toml(["k8s/overlays/prod/kustomization.yaml",
                               "./k8s/base/../base/deployment.yaml"])
                  .replace("[deploy]", '[build]\ncontext = "app/"\ndockerfile = "../Dockerfile"\n'
                           'ca_bundle = "/etc/ssl/certs/ca.pem"\n[deploy]'))
    assert c.deploy is not None
    assert c.deploy.manifests == ["k8s/overlays/prod/kustomization.yaml", "k8s/base/deployment.yaml"]
    assert (c.build.context, c.build.dockerfile) == ("app", "../Dockerfile")
    assert c.build.ca_bundle == "/etc/ssl/certs/ca.pem"
    model = cfg.loads(MODEL + 'workdir = "training"\ninputs = ["../data/*.csv", "env:X", "train.py"]\n'
                      ).model
    assert model is not None and model.inputs == ["../data/*.csv", "env:X", "train.py"]
    assert cfg.loads(BASE.replace("[project]\n", '[project]\nstate_dir = ".cache/maci"\n')) \
        .project.state_dir == ".cache/maci"


# ---------------------------------------------------------------- symlinks out of the project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "app" / "sub").mkdir(parents=True)
    (root / "app" / "Dockerfile").write_text("FROM scratch\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    (root / "out").symlink_to(outside)
    (root / "inner").symlink_to(root / "app")  # a link that stays inside is fine
    return root


def load(root: Path, text: str) -> cfg.Config:
    (root / "ci.toml").write_text(text)
    return cfg.load(root / "ci.toml", {}, root)


@pytest.mark.parametrize(("body", "where"), [
    ('[build]\ncontext = "out"\n', "build.context"),
    ('[build]\ndockerfile = "out/Dockerfile"\n', "build.dockerfile"),
    ('[build]\nca_bundle = "out/ca.pem"\n', "build.ca_bundle"),
    ('[model]\ntrain_command = "t"\nregistered_model = "m"\ninputs = ["out/*.csv"]\n',
     "model.inputs[0]"),
    ('[model]\ntrain_command = "t"\nregistered_model = "m"\nworkdir = "out"\n', "model.workdir"),
    ('[model]\ntrain_command = "t"\nregistered_model = "m"\n[model.artifact]\ndest = "out/m"\n',
     "model.artifact.dest"),
])
def test_a_symlink_out_of_the_project_is_refused(project: Path, body: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(project, BASE + body)
    (problem,) = info.value.problems
    assert problem.path == where and "symlink" in problem.reason
    assert str(project / "ci.toml") in info.value.lines()[0]


def test_a_state_dir_linked_out_of_the_project_is_refused(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"project\.state_dir"):
        load(project, BASE.replace("[project]\n", '[project]\nstate_dir = "out/state"\n'))


def test_links_that_stay_inside_and_real_nested_folders_load(project: Path) -> None:
    c = load(project, BASE + '[build]\ncontext = "inner"\ndockerfile = "sub/../Dockerfile"\n')
    assert (c.build.context, c.build.dockerfile) == ("inner", "Dockerfile")
    assert load(project, BASE + '[build]\ncontext = "app/sub"\n').build.context == "app/sub"


# ---------------------------------------------------------------- the state dir


def test_a_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".maci").write_text("")
    with pytest.raises(UsageError, match=r"project.state_dir: .* is not a directory") as info:
        check_state_dir(tmp_path / ".maci")
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="is not a directory"):
        check_state_dir(tmp_path / ".maci" / "deeper")


def test_a_missing_state_dir_is_fine_and_not_created(tmp_path: Path) -> None:
    check_state_dir(tmp_path / "a" / "b")
    check_state_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_state_dir_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".maci").symlink_to(tmp_path / "gone")
    with pytest.raises(UsageError, match="dangling symlink"):
        check_state_dir(tmp_path / ".maci")


def test_a_read_only_state_dir_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root writes anyway: use a folder the kernel refuses
            folder = Path("/proc/1")
            if not folder.is_dir() or os.access(folder, os.W_OK):
                pytest.skip("no read-only folder to test with")
        with pytest.raises(UsageError, match="is not writable"):
            check_state_dir(folder)
        with pytest.raises(UsageError, match=r"cannot create .* is not writable"):
            check_state_dir(folder / "state")
    finally:
        (tmp_path / "ro").chmod(0o700)


# ---------------------------------------------------------------- through the CLI


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def cli_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "k8s").mkdir()
    (tmp_path / "k8s" / "deployment.yaml").write_text(f"image: {IMAGE}:1\n")
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("MACI_")]:
        monkeypatch.delenv(var)
    return tmp_path


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err.splitlines()


@pytest.mark.parametrize(("toml", "field"), [
    (deploy_toml(["../outside/x.yaml"]), "deploy.manifests[0]"),
    (deploy_toml(["/etc/passwd"]), "deploy.manifests[0]"),
    (deploy_toml(["../../../etc/passwd"]), "deploy.manifests[0]"),
    (deploy_toml(remote="--upload-pack=touch PWNED"), "deploy.remote"),
    (deploy_toml(branch="-x"), "deploy.branch"),
])
@pytest.mark.parametrize("command", ["plan", "deploy"])
def test_plan_and_deploy_refuse_with_one_line_and_write_nothing(
    cli_project: Path, capsys: pytest.CaptureFixture[str], toml: str, field: str, command: str
) -> None:
    (cli_project / "ci.toml").write_text(toml.replace("PWNED", str(cli_project / "pwned")))
    before = files_under(cli_project)
    args = ["plan"] if command == "plan" else ["deploy", "--index", DIGEST]
    code, lines = cli([*args, "--config", str(cli_project / "ci.toml")], capsys)
    assert code == 2
    assert len(lines) == 1 and field in lines[0] and lines[0].startswith("config error:")
    assert files_under(cli_project) == before  # no .maci, no deploy.git, no pwned, no clone


def test_deploy_refuses_a_state_dir_that_is_a_file_before_any_work(
    cli_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cli_project / "ci.toml").write_text(deploy_toml())
    (cli_project / ".maci").write_text("not a folder\n")
    before = files_under(cli_project)
    code, lines = cli(["deploy", "--index", DIGEST], capsys)
    assert code == 2 and len(lines) == 1 and "project.state_dir" in lines[0]
    assert files_under(cli_project) == before  # the local remote deploy.git was not seeded
