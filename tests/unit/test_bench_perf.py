"""The pure parts of the issue-18 benchmark: the run bound, the trace anatomy, the import
breakdown and the ratios (the harness itself runs in tests/e2e/test_bench_quick.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import ci_trace, perf_figures
from bench.perf import base_for, release_tags


def _run(train: float, lanes: dict[str, tuple[float, float]], smoke: float,
         seconds: float) -> dict[str, Any]:
    spans = [{"lane": "model", "stage": "train+gate", "seconds": train, "end": train}]
    for i, (p, (lane, wait)) in enumerate(lanes.items()):
        spans += [{"lane": p, "stage": "test+build+push", "seconds": lane, "end": lane},
                  {"lane": p, "stage": "wait for model", "seconds": wait, "end": lane - 1},
                  {"lane": p, "stage": "smoke", "seconds": smoke - i, "end": lane + smoke}]
    return {"spans": spans, "platforms": {p: {} for p in lanes}, "seconds": seconds,
            "segments": {"smoke": 99.0}}  # the segment spans overlapping smokes: not used


def test_run_bound_is_the_slowest_chain_plus_smoke_plus_one_second() -> None:
    run = _run(10.0, {"linux/amd64": (12.0, 6.0), "linux/arm64": (15.0, 2.0)}, 2.5, 17.0)
    bound = perf_figures.run_bound(run)
    # arm64's own work is 13 s (its lane minus the wait for the model): it decides
    assert bound["jobs"] == {"linux/amd64": 6.0, "linux/arm64": 13.0}
    assert bound["decided_by"] == "linux/arm64"
    assert bound["bound"] == pytest.approx(13.0 + 2.5 + 1.0)
    assert bound["over"] == pytest.approx(17.0 - 16.5)
    assert bound["smoke"] == 2.5  # the slowest platform's own smoke
    assert bound["after_gate"] == pytest.approx(15.0 - 10.0)  # last lane end - gate end


def test_run_bound_decided_by_training() -> None:
    bound = perf_figures.run_bound(_run(14.0, {"linux/amd64": (15.0, 9.0)}, 1.0, 15.5))
    assert bound["decided_by"] == "training"
    assert bound["over"] == pytest.approx(-0.5)


def test_versus_ratio_and_goal() -> None:
    ci = [{"seconds": 10.0, "load": [1.0]}, {"seconds": 12.0, "load": [2.0]}]
    hand = [{"seconds": 10.0, "load": [1.0]}, {"seconds": 10.0, "load": [2.0]}]
    v = perf_figures.versus(ci, hand, 1.05)
    assert v["ratio"] == pytest.approx(1.1)
    assert v["paired"]["min"] == pytest.approx(1.0) and v["paired"]["max"] == pytest.approx(1.2)
    assert v["met"] is False


STDERR = """\
@@ 0.9000 docker info --format {{json .}}
@@ 1.0000 git rev-parse --verify -q HEAD
@@ 1.2000 /venv/bin/python -I -S -c import os docker buildx build --platform linux/amd64 .
@@ 4.5000 JOBEND linux/amd64: passed on local (native, 3.2 s)
@@ 4.6000 docker rm --force x
"""


def test_anatomy_splits_imports_discovery_jobs_and_after() -> None:
    phases = ci_trace.anatomy(STDERR, 5.0)
    assert phases["imports"] == pytest.approx(0.9)
    assert phases["discovery"] == pytest.approx(0.3)
    assert phases["jobs"] == pytest.approx(3.3)
    assert phases["after_jobs"] == pytest.approx(0.5)
    assert phases["docker_calls"] == 3  # the wrapped buildx call counts
    assert phases["git_calls"] == 1


def test_anatomy_without_docker_calls_is_empty() -> None:
    assert ci_trace.anatomy("@@ 0.1 git status\n", 1.0) == {}


def test_import_breakdown_sums_own_time_per_package() -> None:
    text = """\
import time: self [us] | cumulative | imported package
import time:    100000 |     100000 |     pydantic.fields
import time:    200000 |     300000 |   pydantic
import time:     50000 |      50000 |     httpx._main
import time:    400000 |     750000 | ci.cli
"""
    got = ci_trace.import_breakdown(text)
    assert got["total"] == pytest.approx(0.75)  # the root import's cumulative time
    assert got["ci"] == pytest.approx(0.4)
    assert got["pydantic"] == pytest.approx(0.3)
    assert got["httpx"] == pytest.approx(0.05)
    assert list(got)[:3] == ["total", "ci", "pydantic"]


def test_release_tags_and_bases_follow_the_config() -> None:
    conf = {"publish": {"tags": ["sha-{short_sha}", "{branch}", "{semver}"], "latest_on": "main"}}
    assert release_tags(conf, "abc1234def") == ["sha-abc1234", "main", "latest"]
    assert base_for("maci/python:bookworm-{debian_arch}", "linux/arm/v7") == (
        "maci/python:bookworm-armhf")
    assert base_for("maci/python:bookworm-{arch}", "linux/arm64") == "maci/python:bookworm-arm64"
