"""A run id names a folder under the state dir: one from `--run-id`/`MACI_RUN_ID` or the CI
system that could climb out of it is refused before any work (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.core import config as cfg
from ci.core.errors import UsageError
from ci.stages.prepare import prepare
from tests.fakes import FakePlan
from tests.unit.test_release_order import TOML


@pytest.mark.parametrize("rid", ["../../x", "..", "a/b", "-", "x" * 129, "a\nb"])
def test_a_run_id_that_is_not_a_folder_name_is_refused(tmp_path: Path, rid: str) -> None:
    config = cfg.loads(TOML, root=str(tmp_path))
    plan = FakePlan()(config, only=None, engine="docker", environ={})
    if rid == "-":  # a dash alone is a valid folder name: accepted
        assert prepare(config, plan=plan, run_id=rid, environ={}).run_id == "-"
        return
    with pytest.raises(UsageError, match="--run-id / MACI_RUN_ID"):
        prepare(config, plan=plan, run_id=rid, environ={})
    assert not (tmp_path / ".maci").exists() and not (tmp_path.parent / "x").exists()


def test_ci_run_ids_are_accepted(tmp_path: Path) -> None:
    config = cfg.loads(TOML, root=str(tmp_path))
    plan = FakePlan()(config, only=None, engine="docker", environ={})
    for rid in ("42-1", "1234567", "local-20261201T120000-ab12"):
        assert prepare(config, plan=plan, run_id=rid, environ={}).output_dir.name == rid
