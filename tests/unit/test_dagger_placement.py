"""Where a Dagger runner's "native" comes from: the engine's answer, else declared, else host.

The pure decision (`choose_native`), discovery with an injected probe (no process, no
engine), the placement reasons and the plan table's runner lines. The probe through the
real SDK is tests/integration/test_dagger_placement.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

import pytest
from rich.console import Console

from ci.adapters import inventory
from ci.core import config as cfg
from ci.core import platforms
from ci.core.errors import EngineError, EngineUnreachable
from ci.core.plan import NativeChoice, RunnerInfo, choose_native, make_plan
from ci.reports.console import plan_table

ARM_HOST = "tcp://arm:8080"
WAY_IN = {"_EXPERIMENTAL_DAGGER_CLI_BIN": "/opt/dagger"}  # a CLI that can provision sessions
BASE = """
[project]
name = "svc"
image = "127.0.0.1:5000/svc"
platforms = ["linux/amd64", "linux/arm64"]
"""


# ------------------------------------------------------------------ the pure decision


def test_the_engines_answer_is_native_and_agrees_with_a_matching_declaration() -> None:
    assert choose_native(None, "linux/arm64") == NativeChoice(native="linux/arm64",
                                                              source="engine")
    # normalised both sides: aarch64 and linux/arm64/v8 are linux/arm64
    assert choose_native("linux/arm64", "linux/arm64/v8") == NativeChoice(
        native="linux/arm64", source="engine")
    assert choose_native("aarch64", "linux/arm64").note == ""


def test_a_mismatch_is_noted_and_the_engine_wins() -> None:
    got = choose_native("linux/amd64", "linux/arm64", host_platform="linux/amd64")
    assert (got.native, got.source) == ("linux/arm64", "engine")
    assert got.note == ("declared platform linux/amd64 but the engine reports linux/arm64: "
                        "using the engine's")


def test_without_an_answer_the_declared_platform_then_this_host_stand_in() -> None:
    got = choose_native("linux/arm64", None, error="connection refused",
                        host_platform="linux/amd64")
    assert (got.native, got.source) == ("linux/arm64", "declared")
    assert got.note == ("engine not reached at plan time (connection refused): using the "
                        "declared platform linux/arm64")
    got = choose_native(None, None, error="timeout", host_platform="linux/amd64")
    assert (got.native, got.source) == ("linux/amd64", "host")
    assert "assuming this host's platform linux/amd64" in got.note
    # a runner host's platform is not this machine's: nothing to stand in
    got = choose_native(None, None, error="timeout")
    assert (got.native, got.source) == (None, None)
    assert got.note == "engine not reached at plan time (timeout) and no platform declared"


def test_an_answer_that_is_no_platform_counts_as_no_answer() -> None:
    got = choose_native("linux/arm64", "plan9/mips")
    assert (got.native, got.source) == ("linux/arm64", "declared")
    assert "it answered 'plan9/mips'" in got.note


# ------------------------------------------------------------------ discovery, probe injected


def answers(platform: str, version: str = "v0.21.8") -> inventory.Prober:
    asked: list[str] = []

    def probe(host: str, environ: Mapping[str, str]) -> tuple[str, str]:
        asked.append(host)
        return platform, version

    probe.asked = asked  # type: ignore[attr-defined]
    return probe


def fails(exc: Exception) -> inventory.Prober:
    def probe(host: str, environ: Mapping[str, str]) -> tuple[str, str]:
        raise exc

    return probe


def never(host: str, environ: Mapping[str, str]) -> tuple[str, str]:
    raise AssertionError(f"probed {host!r} without a way in")


def test_discovery_asks_the_engine_and_records_its_word() -> None:
    probe = answers("linux/arm64")
    runner = RunnerInfo(name="arm", engine="dagger", host=ARM_HOST, declared="linux/amd64")
    found = inventory.discover_dagger(runner, WAY_IN, probe)
    assert probe.asked == [ARM_HOST]  # type: ignore[attr-defined]
    assert (found.reachable, found.native, found.platform_source, found.version) == (
        True, "linux/arm64", "engine", "v0.21.8")
    assert "but the engine reports linux/arm64" in found.note
    assert "linux/arm64" not in found.emulates and "linux/amd64" in found.emulates


def test_discovery_without_an_answer_falls_back_and_flags_it() -> None:
    down = fails(EngineUnreachable("Dagger engine unreachable (runner host tcp://arm:8080): "
                                   "connection refused"))
    hosted = RunnerInfo(name="arm", engine="dagger", host=ARM_HOST, declared="linux/arm64")
    found = inventory.discover_dagger(hosted, WAY_IN, down)
    assert (found.reachable, found.native, found.platform_source) == (True, "linux/arm64",
                                                                      "declared")
    assert "connection refused" in found.note and found.error == ""
    local = inventory.discover_dagger(RunnerInfo(name="local", engine="dagger"), WAY_IN,
                                      fails(EngineError("boom")))
    assert (local.native, local.platform_source) == (str(platforms.host()), "host")
    undeclared = inventory.discover_dagger(hosted.model_copy(update={"declared": None}),
                                           WAY_IN, down)
    assert (undeclared.reachable, undeclared.native) == (False, None)
    assert undeclared.error.endswith("and no platform declared")


def test_no_way_in_is_unreachable_and_nothing_is_asked() -> None:
    runner = RunnerInfo(name="arm", engine="dagger", host=ARM_HOST, declared="linux/arm64")
    found = inventory.discover_dagger(runner, {"PATH": "/nonexistent"}, never)
    assert (found.reachable, found.native, found.platform_source) == (False, "linux/arm64",
                                                                      "declared")
    assert found.error == "no dagger CLI to connect to this host"


def test_docker_only_discovery_imports_nothing_dagger_and_probes_nothing() -> None:
    code = (
        "import sys\n"
        "from ci.adapters import inventory\n"
        "from ci.core.plan import RunnerInfo\n"
        "def never(host, env): raise SystemExit('probed')\n"
        "inventory.discover([RunnerInfo(name='d', engine='docker'),\n"
        "                    RunnerInfo(name='e', engine='docker', host='tcp://x:1')],\n"
        "                   {'PATH': '/nonexistent'}, probe=never)\n"
        "print(sorted(m for m in sys.modules if m == 'dagger' or 'dagger_' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ plan and table


def runner(name: str, native: str, source: str | None, **kw: object) -> RunnerInfo:
    return RunnerInfo(name=name, engine="dagger", reachable=True, native=native,
                      platform_source=source, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("source", "note", "suffix"), [
    ("engine", "", ""),
    (None, "", ""),
    ("engine", "declared platform linux/amd64 but the engine reports linux/arm64",
     " (the engine's answer; declared linux/amd64)"),
    ("declared", "engine not reached", " (declared; engine not reached at plan time)"),
    ("host", "engine not reached", " (this host's platform; engine not reached at plan time)"),
])
def test_a_native_placement_says_where_native_came_from(source: str | None, note: str,
                                                        suffix: str) -> None:
    arm = runner("arm", "linux/arm64", source, declared="linux/amd64", note=note, host=ARM_HOST)
    local = runner("local", "linux/amd64", "engine", emulates=["linux/arm64"])
    plan = make_plan(cfg.loads(BASE), [local, arm])
    assert plan.job("linux/arm64").placement.reason == f"runner 'arm' is linux/arm64{suffix}"
    assert plan.job("linux/amd64").placement.reason == "runner 'local' is linux/amd64"


def test_the_plan_table_lists_each_runners_native_platform_and_source() -> None:
    arm = runner("arm", "linux/arm64", "engine", declared="linux/amd64", host=ARM_HOST,
                 note="declared platform linux/amd64 but the engine reports linux/arm64: "
                      "using the engine's")
    local = runner("local", "linux/amd64", "host", note="engine not reached [at plan time]")
    down = RunnerInfo(name="ppc", engine="dagger", host="tcp://ppc:1", error="refused")
    console = Console(record=True, width=250, color_system=None)
    console.print(plan_table(make_plan(cfg.loads(BASE), [local, arm, down])))
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert ("runner local: native linux/amd64 (from this host); engine not reached "
            "[at plan time] runner arm: native linux/arm64 (from the engine); declared platform "
            "linux/amd64 but the engine reports linux/arm64: using the engine's runner ppc: "
            "unreachable: refused") in text  # in order; notes are text, not markup
