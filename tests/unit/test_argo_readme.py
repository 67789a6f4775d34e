"""The README's "Run it in your cluster" section (issue #17): its `ci` command line is run, in a
copy of the example; every other line (kubectl, argo) is checked against what that run wrote,
since no cluster runs here; a line of a kind this test does not know fails it. Its Sensor
validates against the Argo Events schema and matches the CloudEvent a release really sends;
the `[argo]` config reference loads with the real config model."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from ci.core import config as cfg
from tests import argo_schemas

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SECTION = README.split("\n## Run it in your cluster\n", 1)[1].split("\n## ", 1)[0]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(SECTION) if kind == lang]


def yaml_docs() -> list[dict[str, Any]]:
    return [d for body in blocks("yaml") for d in YAML(typ="safe", pure=True).load_all(body)]


def test_the_section_has_its_command_lines_and_objects() -> None:
    lines = [ln for b in blocks("console") for ln in b.splitlines() if ln.strip()]
    assert any(" ci export argo " in f" {ln} " for ln in lines), lines
    assert [d["kind"] for d in yaml_docs()] == ["Sensor"]


def test_every_command_line_is_run_or_checked(tmp_path: Path) -> None:
    """`cd` moves; `VAR=… ci …` runs for real; `kubectl apply -f X` needs X to be Argo objects
    that validate (in the namespace given); `argo submit --from workflowtemplate/N -p k=v`
    needs N to be the exported template and k its parameters."""
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "wine", work / "examples" / "wine",
                    ignore=shutil.ignore_patterns(".maci", "model", "__pycache__"))
    (work / ".git").mkdir()  # a repository root: the export names the config by its path in it
    cwd, exported = work, None
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACI_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    for line in (ln for b in blocks("console") for ln in b.splitlines() if ln.strip()):
        words = shlex.split(line, comments=True)
        assignments = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            assignments[key] = value
        if not words:
            continue
        head = words[0]
        if head == "cd":
            cwd = cwd / words[1]
        elif head == "ci":
            res = subprocess.run(words, cwd=cwd, env={**env, **assignments}, capture_output=True,
                                 text=True, timeout=120, check=False)
            assert res.returncode == 0, (line, res.stderr)
            if words[1:3] == ["export", "argo"]:
                exported = cwd / words[words.index("--output") + 1]
        elif head == "kubectl":
            assert words[1] == "apply", line
            target = cwd / words[words.index("-f") + 1]
            files = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
            assert files, line
            namespace = words[words.index("-n") + 1] if "-n" in words else None
            for f in files:
                obj = YAML(typ="safe", pure=True).load(f.read_text())
                assert argo_schemas.problems(obj) == [], (line, f.name)
                if namespace:
                    assert obj["metadata"]["namespace"] == namespace, (line, f.name)
        elif head == "argo":
            assert words[1] == "submit" and exported is not None, line
            template = YAML(typ="safe", pure=True).load((exported / "workflow-template.yaml").read_text())
            name = words[words.index("--from") + 1]
            assert name == f"workflowtemplate/{template['metadata']['name']}", line
            assert template["metadata"]["namespace"] == words[words.index("-n") + 1], line
            given = sorted(w.split("=", 1)[0] for i, w in enumerate(words) if words[i - 1] == "-p")
            wanted = sorted(p["name"] for p in template["spec"]["arguments"]["parameters"])
            assert given == wanted, line
        else:
            pytest.fail(f"a command line this test neither runs nor checks: {line}")
    assert exported is not None


def test_the_sensor_validates_and_matches_a_real_release_event() -> None:
    import json

    from cloudevents.core.bindings.http import to_structured
    from cloudevents.core.formats.json import JSONFormat

    from ci.core.results import SourceInfo
    from ci.core.verdict import Verdict
    from ci.stages.notify import build_event

    [sensor] = yaml_docs()
    assert argo_schemas.problems(sensor) == []
    resource = sensor["spec"]["triggers"][0]["template"]["argoWorkflow"]["source"]["resource"]
    assert argo_schemas.problems(resource) == []
    verdict = Verdict(project="wine", image="registry.example.com/wine", run_id="r1", created="x",
                      source=SourceInfo(sha="a" * 40), expected_platforms=["linux/amd64"],
                      platforms=[], passed=True)
    body = json.loads(to_structured(build_event(verdict, index_digest="sha256:" + "1" * 64),
                                    JSONFormat()).body)
    event = {"body": body}
    for f in sensor["spec"]["dependencies"][0]["filters"]["data"]:
        value: Any = event
        for part in f["path"].split("."):
            value = value[part]
        assert any(re.search(v, value) for v in f["value"]), (f, value)


def test_the_argo_config_reference_loads() -> None:
    reference = README.split("\n## Config reference (`ci.toml`)\n", 1)[1]
    toml = FENCE.search(reference)
    assert toml is not None
    text = toml.group(2)
    argo = text[text.index("[argo]"):].split("\n```", 1)[0]
    data = tomllib.loads('[project]\nname = "wine"\nimage = "r.example.com/wine"\n' + argo)
    config = cfg.validate(data)
    assert config.argo.node_platforms == ["linux/amd64", "linux/arm64"]
    assert config.argo.secrets.git_password == "maci-git/token"
