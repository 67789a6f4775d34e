"""The release record's fingerprint: what counts as 'nothing changed' (real git repos)."""

import subprocess
from pathlib import Path

from ci.core import config as cfg
from ci.core.results import SourceInfo
from ci.stages import record as release_record

CONFIG = """
[project]
name = "svc"
image = "127.0.0.1:5000/svc"
platforms = ["linux/amd64", "linux/arm64"]
"""
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid"]


def repo(tmp_path: Path) -> Path:
    (tmp_path / "ci.toml").write_text(CONFIG)
    (tmp_path / "app.py").write_text("print(1)\n")
    subprocess.run([*GIT, "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*GIT, "-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
    return tmp_path


def fp(root: Path, sha: str = "abc", platforms: tuple[str, ...] = ("linux/amd64",),
       env: dict[str, str] | None = None) -> str:
    conf = cfg.load(root / "ci.toml", env or {}, root)
    return release_record.fingerprint(conf, SourceInfo(sha=sha), list(platforms), "docker")


def test_same_inputs_same_fingerprint(tmp_path: Path) -> None:
    root = repo(tmp_path)
    assert fp(root) == fp(root)


def test_each_input_changes_the_fingerprint(tmp_path: Path) -> None:
    root = repo(tmp_path)
    base = fp(root)
    assert fp(root, sha="def") != base
    assert fp(root, platforms=("linux/arm64",)) != base
    assert fp(root, env={"MACI_SMOKE__REQUESTS": "3"}) != base
    (root / "app.py").write_text("print(2)\n")  # uncommitted edit
    edited = fp(root)
    assert edited != base
    (root / "new.py").write_text("x = 1\n")  # untracked file
    assert fp(root) != edited


def test_ignored_files_do_not_count(tmp_path: Path) -> None:
    root = repo(tmp_path)
    (root / ".gitignore").write_text(".maci/\n")
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qm", "ignore"], check=True)
    base = fp(root)
    (root / ".maci").mkdir()
    (root / ".maci" / "verdict.json").write_text("{}")
    assert fp(root) == base


def test_record_round_trip(tmp_path: Path) -> None:
    root = repo(tmp_path)
    conf = cfg.load(root / "ci.toml", {}, root)
    assert release_record.load(conf) is None
    rec = release_record.ReleaseRecord(
        fingerprint="f", run_id="r", image=conf.project.image, index_digest="sha256:" + "0" * 64,
        tags=["main"], platforms=["linux/amd64"])
    release_record.save(conf, rec)
    assert release_record.load(conf) == rec
    release_record.path_for(conf).write_text("{garbled")
    assert release_record.load(conf) is None


def test_a_declared_env_var_changes_the_fingerprint(tmp_path: Path) -> None:
    """`ci run` must not answer UP TO DATE when an env var the training reads changed."""
    root = repo(tmp_path)
    (root / "ci.toml").write_text(CONFIG + '\n[model]\ntrain_command = "python app.py"\n'
                                  'registered_model = "m"\ninputs = ["app.py", "env:FEATURES"]\n')
    conf = cfg.load(root / "ci.toml", {}, root)

    def with_env(environ: dict[str, str]) -> str:
        return release_record.fingerprint(conf, SourceInfo(sha="abc"), ["linux/amd64"],
                                          "docker", environ)

    assert with_env({"FEATURES": "1"}) == with_env({"FEATURES": "1", "OTHER": "x"})
    assert with_env({"FEATURES": "1"}) != with_env({"FEATURES": "2"})
    assert with_env({}) != with_env({"FEATURES": ""})
