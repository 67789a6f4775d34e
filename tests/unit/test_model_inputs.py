"""Inputs that really decide reuse: env vars, globs and folders in the input hash, entries
that leave the project refused, and the reason naming WHICH entry changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from ci.core import inputs as rules
from ci.core.errors import ConfigError
from ci.stages.inputs import collect, env_identity
from ci.stages.training import entries_tag, recorded_entries

CMD = ["python", "train.py"]
SECRET = "s3cr3t-value-never-shown"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("print('train')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x\n1\n")
    (tmp_path / "data" / "b.csv").write_text("x\n2\n")
    (tmp_path / "data" / "notes.txt").write_text("not data")
    return tmp_path


def files(work: Path, inputs: list[str], **kw: Any) -> list[str]:
    """The relative paths an input set hashed."""
    return sorted(cast(dict[str, str], collect(work, inputs, {}, CMD, **kw).identity["files"]))


def digest(work: Path, inputs: list[str], environ: dict[str, str] | None = None,
           params: dict[str, object] | None = None) -> str:
    return collect(work, inputs, params or {}, CMD, environ=environ or {}).digest


# ---------------------------------------------------------------- env:NAME


def test_an_env_value_is_in_the_hash(work: Path) -> None:
    base = digest(work, ["train.py", "env:FEATURES"], {"FEATURES": "all"})
    assert digest(work, ["train.py", "env:FEATURES"], {"FEATURES": "all"}) == base
    assert digest(work, ["train.py", "env:FEATURES"], {"FEATURES": "two"}) != base


def test_unset_is_distinct_from_empty(work: Path) -> None:
    unset = digest(work, ["env:FEATURES"], {})
    empty = digest(work, ["env:FEATURES"], {"FEATURES": ""})
    assert unset != empty
    assert env_identity("FEATURES", {}) is None
    assert env_identity("FEATURES", {"FEATURES": ""}) is not None


def test_undeclared_env_vars_do_not_matter(work: Path) -> None:
    assert digest(work, ["train.py"], {"OTHER": "1"}) == digest(work, ["train.py"], {})


def test_without_env_entries_the_hash_keeps_its_earlier_shape(work: Path) -> None:
    """Configs that declare no env var keep their hash: their stored runs stay reusable."""
    identity = collect(work, ["train.py"], {}, CMD, environ={"X": "1"}).identity
    assert set(identity) == {"v", "files", "packages", "params", "command"}


def test_the_value_of_an_env_var_is_never_stored(work: Path) -> None:
    found = collect(work, ["env:TOKEN"], {}, CMD, environ={"TOKEN": SECRET})
    text = json.dumps(found.identity) + json.dumps(found.entries) + entries_tag(found.entries)
    assert SECRET not in text
    assert "env:TOKEN" in found.entries  # the name is what a reason can show


def test_the_same_value_under_another_name_hashes_differently() -> None:
    assert env_identity("A", {"A": "v"}) != env_identity("B", {"B": "v"})


def test_an_env_entry_must_name_a_variable(work: Path) -> None:
    with pytest.raises(ConfigError) as err:
        digest(work, ["env:"])
    assert err.value.problems[0].path == "model.inputs"


# ---------------------------------------------------------------- files, folders, globs


def test_a_glob_hashes_its_matches_by_path_and_content(work: Path) -> None:
    base = digest(work, ["data/*.csv"])
    assert files(work, ["data/*.csv"]) == ["data/a.csv", "data/b.csv"]
    (work / "data" / "notes.txt").write_text("changed, but not a csv")
    assert digest(work, ["data/*.csv"]) == base
    (work / "data" / "c.csv").write_text("x\n3\n")
    assert digest(work, ["data/*.csv"]) != base


def test_double_star_takes_every_file_once(work: Path) -> None:
    (work / "data" / "deep").mkdir()
    (work / "data" / "deep" / "d.csv").write_text("x\n")
    assert files(work, ["**"]) == ["data/a.csv", "data/b.csv", "data/deep/d.csv",
                                   "data/notes.txt", "train.py"]


def test_a_folder_is_hashed_by_relative_path_and_content(work: Path) -> None:
    base = digest(work, ["data"])
    (work / "data" / "a.csv").rename(work / "data" / "z.csv")
    assert digest(work, ["data"]) != base


def test_a_glob_matching_nothing_is_a_config_error(work: Path) -> None:
    with pytest.raises(ConfigError, match="matches nothing") as err:
        digest(work, ["data/*.parquet"])
    assert err.value.problems[0].value == "data/*.parquet"


@pytest.mark.parametrize("entry", ["../outside.csv", "../*.csv", "data/../../x", "/etc/hostname"])
def test_an_entry_leaving_the_project_is_a_config_error(work: Path, entry: str) -> None:
    with pytest.raises(ConfigError, match="outside the project root") as err:
        collect(work, [entry], {}, CMD, root=work)
    problem = err.value.problems[0]
    assert (problem.path, problem.value) == ("model.inputs", entry)
    assert err.value.exit_code == 2


def test_a_symlink_out_of_the_project_is_refused(
    work: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.csv"
    outside.write_text("x\n")
    (work / "data" / "link.csv").symlink_to(outside)
    with pytest.raises(ConfigError, match="resolves outside the project root"):
        digest(work, ["data/*.csv"])


def test_the_parent_of_the_workdir_is_fine_inside_the_project(work: Path) -> None:
    (work / "sub").mkdir()
    assert files(work / "sub", ["../train.py"], root=work) == ["../train.py"]


def test_skipped_files_are_left_out_of_folders_but_not_when_named(work: Path) -> None:
    written = work / "data" / "b.csv"
    assert "data/b.csv" in files(work, ["data"])
    assert "data/b.csv" not in files(work, ["data"], skip=[written])
    assert files(work, ["data/b.csv"], skip=[written]) == ["data/b.csv"]


# ---------------------------------------------------------------- per-entry identities


def test_every_entry_param_and_the_command_gets_a_short_identity(work: Path) -> None:
    found = collect(work, ["train.py", "data/*.csv", "env:FEATURES", "pkg:pydantic"],
                    {"C": 1.0}, CMD, environ={"FEATURES": "all"})
    assert set(found.entries) == {"train.py", "data/*.csv", "env:FEATURES", "pkg:pydantic",
                                  "params.C", "command"}
    assert all(len(v) == rules.SHORT for v in found.entries.values())


def test_only_the_changed_entry_changes_identity(work: Path) -> None:
    before = collect(work, ["train.py", "env:FEATURES"], {}, CMD, environ={"FEATURES": "1"})
    after = collect(work, ["train.py", "env:FEATURES"], {}, CMD, environ={"FEATURES": "2"})
    assert rules.changes(before.entries, after.entries) == ["env:FEATURES changed"]


def test_the_entries_tag_round_trips_and_stays_under_the_tag_limit() -> None:
    entries = {"train.py": "a" * 12, "env:X": "b" * 12}
    assert recorded_entries({"maci.inputs": entries_tag(entries)}) == entries
    many = {f"params.p{i}": "c" * 12 for i in range(400)} | entries
    tag = entries_tag(many)
    assert len(tag) <= 5000
    assert set(json.loads(tag)) == {"train.py", "env:X", "params"}
    assert recorded_entries({}) is None and recorded_entries({"maci.inputs": "{}"}) is None


# ---------------------------------------------------------------- the reason (pure)


def test_changes_say_changed_added_and_removed() -> None:
    got = rules.changes({"a": "1", "b": "2", "gone": "3"}, {"a": "1", "b": "9", "new": "4"})
    assert got == ["b changed", "new added", "gone removed"]


def test_changes_name_a_few_entries_then_count() -> None:
    prev = {f"e{i}": "0" for i in range(8)}
    got = rules.changes(prev, {k: "1" for k in prev})
    assert got == ["e0, e1, e2, e3, e4 and 3 more changed"]


def test_reasons_for_each_decision() -> None:
    cur = {"env:FEATURES": "2", "train.py": "t"}
    prev = {"env:FEATURES": "1", "train.py": "t"}
    assert rules.retrain_reason(forced_by="", previous_run="abc", previous_entries=prev,
                                current=cur, same_hash=False) == "retrained: env:FEATURES changed"
    assert rules.retrain_reason(forced_by="--retrain", previous_run="abc", previous_entries=cur,
                                current=cur, same_hash=True) == \
        "retrained: --retrain (inputs unchanged)"
    assert rules.retrain_reason(forced_by="", previous_run=None, previous_entries=None,
                                current=cur, same_hash=False).startswith("trained: no earlier")
    assert "recorded no per-entry" in rules.retrain_reason(
        forced_by="", previous_run="abc", previous_entries=None, current=cur, same_hash=False)
    assert rules.reuse_reason("abcdef0123456789", "1a2b" * 16) == \
        "reused run abcdef012345: inputs unchanged (hash 1a2b1a2b1a2b), no retraining"


@pytest.mark.parametrize(("entry", "kind"), [
    ("env:X", "env"), ("pkg:scikit-learn", "pkg"), ("data/*.csv", "glob"), ("**", "glob"),
    ("data/[ab].csv", "glob"), ("train.py", "path"), ("lib", "path"),
])
def test_entry_kinds(entry: str, kind: str) -> None:
    assert rules.kind_of(entry) == kind


def test_a_glob_never_takes_caches_git_or_the_state_dir(work: Path) -> None:
    before = digest(work, ["*"])
    for junk in (".git", ".maci", "__pycache__"):
        (work / junk).mkdir()
        (work / junk / "churn").write_text("changes every run")
    assert digest(work, ["*"]) == before


def test_a_skipped_folder_skips_everything_under_it(work: Path) -> None:
    (work / "state" / "runs").mkdir(parents=True)
    (work / "state" / "runs" / "mlflow.db").write_text("grows")
    hashed = files(work, ["**"], skip=[work / "state"])
    assert "train.py" in hashed and not any(f.startswith("state/") for f in hashed)
