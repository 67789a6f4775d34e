"""ci.stages.smoke's pure parts: where the published port is reached, percentiles, and the judgement."""

from __future__ import annotations

from collections import Counter

import pytest

from ci.core.config import SmokeConfig
from ci.stages.smoke import Endpoint, endpoint_for, evaluate, percentile

REF = "127.0.0.1:5000/app@sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("", Endpoint("127.0.0.1", "127.0.0.1")),
        ("unix:///var/run/docker.sock", Endpoint("127.0.0.1", "127.0.0.1")),
        ("tcp://127.0.0.1:2375", Endpoint("127.0.0.1", "127.0.0.1")),
        ("tcp://localhost:2375", Endpoint("127.0.0.1", "127.0.0.1")),
        ("tcp://arm-box.lan:2376", Endpoint("0.0.0.0", "arm-box.lan")),
        ("ssh://ci@10.0.0.7", Endpoint("0.0.0.0", "10.0.0.7")),
    ],
)
def test_endpoint_for_docker_host(host: str, expected: Endpoint) -> None:
    assert endpoint_for(host) == expected


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95.0
    assert percentile(values, 50) == 50.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 95) == 0.0
    assert percentile([5.0, 1.0, 3.0], 100) == 5.0


def test_evaluate_pass_and_native_bound() -> None:
    cfg = SmokeConfig(p95_ms=10, p95_ms_emulated=100)
    r = evaluate(platform="linux/amd64", placement="native", reference=REF, config=cfg,
                 latencies_ms=[1.0] * 19 + [50.0], failures=Counter(), seconds=1.23456)
    assert r.passed and r.reason == "" and r.requests == 20 and r.p95_ms == 1.0 and r.bound_ms == 10
    assert r.seconds == 1.235


def test_evaluate_emulated_gets_its_own_bound() -> None:
    cfg = SmokeConfig(p95_ms=10, p95_ms_emulated=100)
    lat = [50.0] * 20
    assert not evaluate(platform="linux/arm64", placement="native", reference=REF, config=cfg,
                        latencies_ms=lat, failures=Counter(), seconds=1).passed
    emu = evaluate(platform="linux/arm64", placement="emulated", reference=REF, config=cfg,
                   latencies_ms=lat, failures=Counter(), seconds=1)
    assert emu.passed and emu.bound_ms == 100


def test_evaluate_reports_every_failed_bound() -> None:
    cfg = SmokeConfig(p95_ms=10, max_error_rate=0.05)
    r = evaluate(platform="linux/amd64", placement="native", reference=REF, config=cfg,
                 latencies_ms=[20.0] * 8, failures=Counter({"HTTP 500": 1, "ReadTimeout": 1}), seconds=1)
    assert not r.passed and r.errors == 2 and r.error_rate == 0.2
    assert r.reason == ("error rate 20.0% > 5.0% (2/10 failed: HTTP 500 x1, ReadTimeout x1); "
                        "p95 20.0 ms > 10 ms (native bound)")


def test_evaluate_with_no_successful_request() -> None:
    r = evaluate(platform="linux/amd64", placement="native", reference=REF, config=SmokeConfig(),
                 latencies_ms=[], failures=Counter({"HTTP 500": 5}), seconds=1)
    assert not r.passed and r.error_rate == 1.0 and r.p95_ms == 0.0
    assert r.reason.startswith("error rate 100.0% > 0.0% (5/5 failed: HTTP 500 x5)")
