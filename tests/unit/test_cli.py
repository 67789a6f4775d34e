"""CLI behaviour through Typer's CliRunner and through `main()` (the exit-code mapper)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ci.cli import app, main

CONFIG = """
[project]
name = "svc"
image = "127.0.0.1:5000/svc"
platforms = ["linux/amd64", "linux/arm64"]

[[runners]]
name = "eng"
engine = "dagger"
platform = "linux/amd64"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "ci.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    for var in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no dagger CLI: the engine is unreachable
    return tmp_path


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("plan", "doctor", "setup-qemu"):
        assert cmd in result.output


def test_plan_json_with_unreachable_engine_exits_1(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert {j["placement"]["kind"] for j in data["jobs"]} == {"unavailable"}
    assert "no Dagger session" in data["jobs"][0]["placement"]["reason"]


def test_plan_returns_value_through_clirunner(project: Path) -> None:
    result = CliRunner().invoke(app, ["plan", "--json"], standalone_mode=False)
    assert result.return_value == 1
    assert json.loads(result.stdout)["project"] == "svc"


def test_plan_with_session_env_places_dagger_runner(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAGGER_SESSION_PORT", "1")
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "t")
    assert main(["plan", "--json", "-p", "linux/arm64", "--platform", "amd64"]) == 0
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    assert [(j["platform"], j["placement"]["kind"]) for j in jobs] == [
        ("linux/arm64", "emulated"), ("linux/amd64", "native")]


def test_plan_table_output(project: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAGGER_SESSION_PORT", "1")
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "t")
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "linux/arm64" in out and "emulated" in out and "native" in out


def test_misspelled_key_exits_2_with_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "ci.toml").write_text(CONFIG + "\n[emulaton]\nfallback = 'fail'\n")
    assert main(["plan"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"config error: {project / 'ci.toml'}: emulaton = {{'fallback': 'fail'}}: unknown key"
    ]


def test_bad_platform_option_exits_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--platform", "linux/arm65"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: 'linux/arm65': unknown architecture 'arm65'"]


def test_bad_engine_and_unknown_option_exit_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--engine", "podman"]) == 2
    assert "--engine: 'podman'" in capsys.readouterr().err
    assert main(["plan", "--frobnicate"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_no_config_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 2
    assert "no ci.toml found" in capsys.readouterr().err


def test_python_dash_m_and_lazy_imports() -> None:
    """`python -m ci` works and neither --help nor plan imports mlflow or dagger."""
    code = (
        "import sys\n"
        "from ci.cli import main\n"
        "rc = main(['--help'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mlflow', 'dagger', 'python_on_whales', 'sklearn', 'httpx'))\n"
        "print(rc, bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    mod = subprocess.run([sys.executable, "-m", "ci", "version"], capture_output=True, text=True)
    assert mod.returncode == 0 and mod.stdout.startswith("multiarch-ci ")


def test_plan_imports_no_heavy_modules(project: Path) -> None:
    code = (
        "import sys\n"
        "from ci.cli import main\n"
        "rc = main(['plan', '--json'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('mlflow', 'dagger', 'python_on_whales', 'sklearn'))\n"
        "print('RESULT', rc, bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=project, check=False)
    assert out.stdout.strip().splitlines()[-1] == "RESULT 1 []"
