"""Which push route each daemon gets, from one `docker info`: by digest on the containerd image
store (Docker 26 here), the temporary-tag route on the classic store (the system's 20.10), and
`ci doctor` saying so per runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ci.adapters.engines import oci_route
from ci.adapters.engines.docker import DockerEngine
from tests.fixtures.docker26 import Docker26
from tests.fixtures.sampleapp import make_project

pytestmark = pytest.mark.integration


def test_the_containerd_store_pushes_by_digest(docker26: Docker26) -> None:
    engine = DockerEngine(docker26.host, "d26")
    info = engine.ping()
    assert info["route"] == oci_route.ROUTE_DIGEST and info["version"].startswith("26.")
    assert info["platform"] == "linux/amd64" and engine.by_digest


def test_the_classic_store_keeps_the_temporary_tag_route(docker_stack: None) -> None:
    engine = DockerEngine()
    info = engine.ping()
    assert info["route"] == oci_route.ROUTE_TAG and not engine.by_digest
    assert info["platform"] == "linux/amd64"


def test_doctor_names_each_runners_route(docker26: Docker26, docker_stack: None,
                                         tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", "127.0.0.1:9/doctor/app", runners=[
        {"name": "classic", "engine": "docker", "platform": "linux/amd64"},
        {"name": "d26", "engine": "docker", "host": docker26.host, "platform": "linux/amd64"}])
    res = subprocess.run([sys.executable, "-m", "ci", "doctor", "--json"], cwd=project,
                         capture_output=True, text=True, timeout=120, check=False)
    rows = {r["runner"]: r for r in json.loads(res.stdout)["push"]}
    assert rows["d26"]["route"] == "digest" and "reproducible" in rows["d26"]["line"]
    assert rows["classic"]["route"] == "tag"
    assert "containerd-snapshotter" in rows["classic"]["line"]


@pytest.mark.parametrize("text", ["", "garbage", '"" "linux" "x86_64" []', "null null null null"])
def test_an_unreadable_docker_info_is_no_probe(text: str) -> None:
    assert oci_route.parse_info(text) is None
