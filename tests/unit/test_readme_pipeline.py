"""The pipeline the README shows (section "Your own pipelines") runs as written: copied into a
project's pipelines/, loaded by `ci run nightly`'s loader, driven with fakes at the ports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ci.commands.run import run_pipeline
from ci.core import config as cfg
from tests.fakes import FIXED_NOW, Fakes
from tests.unit.test_release_order import ENV, TOML

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_pipeline() -> str:
    section = README.read_text().split("## Your own pipelines", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section shows exactly one pipeline"
    return blocks[0]


@pytest.mark.parametrize("frozen", [False, True])
def test_the_readme_nightly_runs_as_written(tmp_path: Path, frozen: bool) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "nightly.py").write_text(readme_pipeline())
    if frozen:
        (tmp_path / "RELEASE_FREEZE").write_text("launch week\n")
    config = cfg.loads(TOML, root=str(tmp_path))
    fakes = Fakes()
    code, run, error = run_pipeline(config, "nightly", environ=ENV, ports=fakes.ports(),
                                    live=False)
    tags = fakes.registry.tags("examples/wine")
    if frozen:
        assert code == 1 and error is not None
        assert error.message == "release rejected, nothing published: freeze: release freeze"
        assert tags == {} and not fakes.moved
    else:
        assert (code, error) == (0, None)
        assert sorted(tags) == sorted([f"nightly-{FIXED_NOW:%Y%m%d}", "nightly"])
        assert fakes.tracking.calls == [] and run.verdict is not None
        assert run.verdict.model_required is False
