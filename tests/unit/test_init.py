"""`ci init` (issue #12, item 6): each guess on inputs built here (Dockerfile text, remote URLs,
small folders), the written config loads, and an existing config is refused with nothing
written. Git is stubbed out: `tests/integration/test_init.py` runs the real command in repos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ci.cli import main
from ci.commands import init
from ci.core import config as cfg
from ci.core.errors import EXIT_USAGE, UsageError

MULTI = """\
# syntax=docker/dockerfile:1
ARG BASE=python:3.12-slim
ARG OTHER
FROM --platform=$BUILDPLATFORM ${BASE} as Base
RUN <<EOF
echo "FROM evil AS not_a_stage"
EOF
# FROM commented AS nope
FROM base \\
    AS test
COPY tests/ tests/
FROM base AS prod
CMD ["python", "-m", "app"]
"""


@pytest.fixture(autouse=True)
def no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(init, "git_origin", lambda root: "")


def stages(*names: str | None) -> list[init.Stage]:
    return [init.Stage(n, "img") for n in names]


def repo(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


# --- the Dockerfile ----------------------------------------------------------------------------


def test_multi_stage_parse_skips_comments_heredocs_and_joins_continuations() -> None:
    parsed = init.parse_dockerfile(MULTI)
    assert [s.name for s in parsed.stages] == ["Base", "test", "prod"]
    assert parsed.stages[0].image == "${BASE}"
    assert parsed.args == {"BASE": "python:3.12-slim", "OTHER": None}
    assert parsed.from_vars == ("BASE",)


def test_parse_single_stage_lowercase_keywords_and_tabs() -> None:
    parsed = init.parse_dockerfile("from\tpython:3.12 \nrun echo hi\n")
    assert parsed.stages == (init.Stage(None, "python:3.12"),)
    assert parsed.from_vars == ()


def test_parse_backtick_escape_and_continuation_at_the_end() -> None:
    parsed = init.parse_dockerfile("# escape=`\nFROM mcr/windows `\n  AS final `\n")
    assert [s.name for s in parsed.stages] == ["final"]


def test_args_after_the_first_from_are_not_global() -> None:
    parsed = init.parse_dockerfile("FROM a AS one\nARG BASE=x\nFROM ${BASE} AS two\n")
    assert parsed.args == {} and parsed.from_vars == ("BASE",)


@pytest.mark.parametrize(("names", "want"), [
    (("base", "test", "prod"), "prod"),
    (("deps", "Runtime", "debug"), "Runtime"),
    (("builder", "final", "release"), "release"),  # runtime > release > prod > final
    (("base", "app", "test"), "app"),  # the last stage that is not a test stage
    (("build", "serve"), "serve"),
    (("build", None), None),  # unnamed last stage: a plain build makes it anyway
    (("test",), "test"),
])
def test_release_target(names: tuple[str | None, ...], want: str | None) -> None:
    assert init.choose_release_target(stages(*names)) == want


@pytest.mark.parametrize(("names", "release", "want"), [
    (("base", "test", "prod"), "prod", "test"),
    (("base", "Tests", "prod"), "prod", "Tests"),
    (("base", "ci", "prod"), "prod", "ci"),
    (("base", "prod"), "prod", None),
    (("test",), "test", None),  # never the release stage itself
])
def test_test_target(names: tuple[str, ...], release: str | None, want: str | None) -> None:
    assert init.choose_test_target(stages(*names), release) == want


# --- the repository ----------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "image"), [
    ("git@github.com:acme/svc.git", "ghcr.io/acme/svc"),
    ("https://github.com/Acme/My.Svc", "ghcr.io/acme/my.svc"),
    ("https://x-access-token:ghp_secret@github.com/acme/svc.git", "ghcr.io/acme/svc"),
    ("ssh://git@github.com:22/acme/svc.git/", "ghcr.io/acme/svc"),
    ("git@gitlab.com:group/sub/proj.git", "registry.gitlab.com/group/sub/proj"),
    ("https://gitlab.com/g/p", "registry.gitlab.com/g/p"),
    ("git@bitbucket.org:team/repo.git", None),
    ("https://github.com/justowner", None),
    ("/srv/git/repo.git", None),
    ("", None),
])
def test_image_from_remote(url: str, image: str | None) -> None:
    assert init.image_from_remote(url) == image


@pytest.mark.parametrize(("pyproject", "folder", "name"), [
    ({"project": {"name": "svc"}}, "ignored", "svc"),
    ({}, "my repo!", "my-repo"),
    ({"project": {"name": "_x_"}}, "d", "x"),
    ({}, "...", "app"),
])
def test_project_name(pyproject: dict[str, object], folder: str, name: str) -> None:
    assert init.project_name(pyproject, folder) == name


def test_training_script_by_path_and_by_console_script(tmp_path: Path) -> None:
    assert init.find_training(tmp_path, {}) is None
    repo(tmp_path, {"src/svc/training.py": ""})
    scripts = {"project": {"scripts": {"serve": "svc.app:main", "svc-train": "svc.training:main"}}}
    assert init.find_training(tmp_path, scripts) == init.Training(
        ("svc-train",), ("src/svc/training.py", "pyproject.toml"), "[project.scripts] svc-train")
    repo(tmp_path, {"scripts/train.py": "", "training/train.py": ""})
    assert init.find_training(tmp_path, scripts) == init.Training(
        ("python", "training/train.py"), ("training/train.py",), "training/train.py")


def test_manifests_beside_a_kustomization_under_k8s_or_deploy(tmp_path: Path) -> None:
    repo(tmp_path, {"k8s/kustomization.yaml": "", "k8s/rollout.yaml": "", "k8s/notes.txt": "",
                    "deploy/overlays/prod/kustomization.yml": "", "other/kustomization.yaml": "",
                    "deploy/loose.yaml": ""})
    assert init.find_manifests(tmp_path) == [
        "k8s/kustomization.yaml", "k8s/rollout.yaml", "deploy/overlays/prod/kustomization.yml"]
    outside = repo(tmp_path / "outside", {"kustomization.yaml": "", "x.yaml": ""})
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "k8s").symlink_to(outside)  # found there, but not inside
    (tmp_path / "inner" / "deploy").write_text("a file, not a folder")
    assert init.find_manifests(tmp_path / "inner") == []


def test_pytest_layout(tmp_path: Path) -> None:
    assert init.pytest_layout(tmp_path, {}) is None
    assert init.pytest_layout(tmp_path, {"tool": {"pytest": {}}}) == "pyproject [tool.pytest]"
    (tmp_path / "pytest.ini").write_text("")
    assert init.pytest_layout(tmp_path, {}) == "pytest.ini"


# --- the command -------------------------------------------------------------------------------


def test_written_config_loads_with_every_guess(tmp_path: Path) -> None:
    root = repo(tmp_path, {"Containerfile": MULTI, "training/train.py": "", "tests/test_a.py": "",
                           "pyproject.toml": '[project]\nname = "svc"\n',
                           "k8s/kustomization.yaml": "", "k8s/deployment.yaml": ""})
    result = init.run_init(root, image="ghcr.io/acme/svc", cwd=root)
    assert result.written and result.path.read_text() == result.text
    conf = cfg.load(result.path, {}, root)
    assert (conf.project.name, conf.project.image) == ("svc", "ghcr.io/acme/svc")
    assert conf.project.platforms == ["linux/amd64", "linux/arm64"]
    assert (conf.build.dockerfile, conf.build.target, conf.test.target) == ("Containerfile", "prod",
                                                                            "test")
    assert conf.build.base_image is None  # a hint only: ARG BASE has a default
    assert '# base_image = "python:3.12-slim"' in result.text
    assert "tests" in conf.test.command and conf.test.junit_path in conf.test.command[-1]
    assert conf.model is not None
    assert conf.model.train_command == ["python", "training/train.py"]
    assert (conf.model.registered_model, conf.model.experiment) == ("svc-model", "svc")
    assert conf.model.inputs == ["training/train.py"] and conf.model.thresholds == {}
    assert "# [model.thresholds.accuracy]" in result.text
    assert conf.deploy is None
    assert '# manifests = ["k8s/kustomization.yaml", "k8s/deployment.yaml"]' in result.text
    assert result.steps[-3:] == [
        f"{len(result.steps) - 2}. ci doctor  # Docker, buildx, qemu binfmt handlers, registry, MLflow",
        f"{len(result.steps) - 1}. ci plan  # where each platform runs: native, emulated or unavailable",
        f"{len(result.steps)}. ci run --dry-run  # every gate, nothing published or deployed"]
    assert not any("placeholder" in s for s in result.steps)


def test_single_stage_without_training_gets_a_placeholder(tmp_path: Path) -> None:
    root = repo(tmp_path / "my app", {"Dockerfile": "FROM python:3.12\nCMD [\"x\"]\n"})
    result = init.run_init(root, platforms=["linux/arm/v7,amd64"], cwd=tmp_path)
    conf = cfg.load(result.path, {}, root)
    assert conf.project.image == "registry.example.com/change-me/my-app"
    assert conf.project.platforms == ["linux/arm/v7", "linux/amd64"]
    assert conf.build.target is None and conf.test.target == ""  # tests in the release image
    assert conf.model is None and "# [model]" in result.text
    assert result.steps[0].startswith("1. edit project.image")
    assert any("set [test] command" in s for s in result.steps)
    assert any("-c " in s and str(result.path) in s for s in result.steps)  # --dir elsewhere


def test_from_base_without_default_asks_for_base_image(tmp_path: Path) -> None:
    root = repo(tmp_path, {"Dockerfile": "ARG BASE\nFROM $BASE AS runtime\n"})
    result = init.run_init(root, image="r/x", write=False)
    assert '# base_image = "maci/python:bookworm-{debian_arch}"' in result.text
    assert any("set build.base_image" in s for s in result.steps)
    assert not result.written and not (root / "ci.toml").exists()
    cfg.loads(result.text, "ci.toml", str(root), {})


@pytest.mark.parametrize("existing", ["ci.toml", "pyproject.toml"])
def test_refuses_an_existing_config_and_writes_nothing(tmp_path: Path, existing: str) -> None:
    body = "[tool.ci.project]\nname = 'x'\n" if existing == "pyproject.toml" else "keep = 1\n"
    root = repo(tmp_path, {"Dockerfile": "FROM a\n", existing: body})
    with pytest.raises(UsageError) as caught:
        init.run_init(root)
    assert caught.value.exit_code == EXIT_USAGE
    assert str(root / existing) in caught.value.message and "\n" not in caught.value.message
    assert sorted(p.name for p in root.iterdir()) == sorted(["Dockerfile", existing])
    assert (root / existing).read_text() == body


def test_force_overwrites_and_other_tool_tables_are_no_config(tmp_path: Path) -> None:
    root = repo(tmp_path, {"Dockerfile": "FROM a\n", "ci.toml": "old",
                           "pyproject.toml": "[tool.cibuildwheel]\nbuild = '*'\n"})
    assert init.existing_config(root) == root / "ci.toml"
    init.run_init(root, image="r/x", force=True)
    assert (root / "ci.toml").read_text().startswith("# multiarch-ci config")
    (root / "ci.toml").unlink()
    assert init.existing_config(root) is None


def test_paths_stay_inside_the_directory(tmp_path: Path) -> None:
    root = repo(tmp_path / "app", {"Dockerfile": "FROM a\n"})
    repo(tmp_path, {"Outside": "FROM b\n"})
    (root / "Containerfile").symlink_to(tmp_path / "Outside")
    for bad in ("../Outside", str(tmp_path / "Outside"), "Containerfile"):
        with pytest.raises(UsageError, match="outside"):
            init.run_init(root, dockerfile=bad, write=False)
    with pytest.raises(UsageError, match="no such file"):
        init.run_init(root, dockerfile="docker/Dockerfile", write=False)
    with pytest.raises(UsageError, match="not a directory"):
        init.run_init(root / "Dockerfile")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "Dockerfile").symlink_to(tmp_path / "Outside")  # not followed out
    with pytest.raises(UsageError, match="no Dockerfile or Containerfile"):
        init.run_init(tmp_path / "linked")
    assert not (tmp_path / "linked" / "ci.toml").exists()


def test_cli_report_json_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = repo(tmp_path, {"Dockerfile": "FROM a AS runtime\n"})
    assert main(["init", "--dir", str(root), "--stdout"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("# multiarch-ci config") and "next steps:" in out.err
    assert not (root / "ci.toml").exists()
    assert main(["init", "--dir", str(root), "--json", "--image", "r/x"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["written"] and data["path"] == str(root / "ci.toml")
    assert data["config"] == (root / "ci.toml").read_text()
    assert main(["init", "--dir", str(root)]) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {root / 'ci.toml'} already exists (--force writes a new ci.toml)"]
    assert main(["init", "--dir", str(root / "nope")]) == EXIT_USAGE
    assert main(["init", "--dir", str(root), "--force", "-p", "sparc"]) == EXIT_USAGE
