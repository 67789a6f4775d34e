"""The critical path of a run, from span data built by hand (the function is pure)."""

from __future__ import annotations

import io
import random

from rich.console import Console

from ci.core.critical_path import WAIT_FOR_MODEL, critical_path
from ci.core.results import SourceInfo
from ci.core.verdict import Verdict, decide
from ci.reports import github
from ci.reports.summary import Span, print_summary

AMD, ARM = "linux/amd64", "linux/arm64"
JOB = "test+build+push"


def chain(spans: list[Span]) -> list[tuple[str, str, float]]:
    path = critical_path(spans)
    assert path is not None
    return [(s.lane, s.stage, round(s.seconds, 2)) for s in path.stages]


MODEL_BOUND = [  # training is the long pole: both release builds wait for the model
    Span("plan", "release", 100.0, 100.3),
    Span("train+gate", "model", 100.3, 111.5),
    Span("materialize", "model", 111.5, 111.7),
    Span(JOB, AMD, 100.3, 113.0), Span(WAIT_FOR_MODEL, AMD, 102.0, 111.72),
    Span(JOB, ARM, 100.3, 113.8), Span(WAIT_FOR_MODEL, ARM, 104.0, 111.72),
    Span("smoke", AMD, 113.0, 114.0),
    Span("smoke", ARM, 113.8, 116.1),
    Span("deploy preflight", "release", 116.2, 116.3),
    Span("publish", "release", 116.3, 116.8),
]


def test_a_chain_across_lanes_goes_through_the_model_a_release_build_waited_for() -> None:
    """The part of a job after its wait follows the model; its tests are off the path."""
    assert chain(MODEL_BOUND) == [
        ("release", "plan", 0.3), ("model", "train+gate", 11.2), ("model", "materialize", 0.2),
        (ARM, "release build+push", 2.08), (ARM, "smoke", 2.3),
        ("release", "deploy preflight", 0.1), ("release", "publish", 0.5)]
    path = critical_path(MODEL_BOUND)
    assert path is not None
    assert path.slack == ((AMD, 2.2000000000000028),)
    assert round(path.seconds, 2) == 16.8 and round(path.between_stages, 2) == 0.12
    assert path.line() == (
        "critical path 16.8 s: plan 0.3 s → train+gate 11.2 s → materialize 0.2 s → "
        "linux/arm64 release build+push 2.1 s → linux/arm64 smoke 2.3 s → "
        "deploy preflight 0.1 s → publish 0.5 s (+0.1 s between stages); "
        "slack: linux/amd64 2.2 s")
    assert path.to_json()["stages"][3] == {"lane": ARM, "stage": "release build+push",
                                           "seconds": 2.08, "ok": True}
    assert path.to_json()["slack"] == [{"lane": AMD, "seconds": 2.2}]


def test_a_job_longer_than_training_is_on_the_path_whole_and_the_model_has_slack() -> None:
    spans = [
        Span("plan", "release", 0.0, 1.0),
        Span("train+gate", "model", 1.0, 4.0), Span("materialize", "model", 4.0, 4.5),
        Span(JOB, AMD, 1.0, 9.0), Span(JOB, ARM, 1.0, 7.0),
        Span("smoke", AMD, 9.0, 10.0), Span("smoke", ARM, 7.0, 8.0),
        Span("publish", "release", 10.0, 10.5),
    ]
    assert chain(spans) == [("release", "plan", 1.0), (AMD, JOB, 8.0), (AMD, "smoke", 1.0),
                            ("release", "publish", 0.5)]
    path = critical_path(spans)
    assert path is not None and path.between_stages == 0.0
    # arm's result is needed at publish; when amd asked for the model no span says (no
    # wait): the model's slack runs to the next join too, an upper bound
    assert dict(path.slack) == {"model": 5.5, ARM: 2.0}


def test_a_smoke_waiting_for_the_runner_follows_the_smoke_it_waited_for() -> None:
    """Capacity 1: arm's smoke starts when amd's ends, so amd's smoke is on the path."""
    spans = [Span(JOB, AMD, 0.0, 5.0), Span(JOB, ARM, 0.0, 5.5),
             Span("smoke", AMD, 5.0, 8.0), Span("smoke", ARM, 8.0, 10.0)]
    assert chain(spans) == [(AMD, JOB, 5.0), (AMD, "smoke", 3.0), (ARM, "smoke", 2.0)]


def test_ties_go_to_the_same_lane_then_the_longest_stage_whatever_the_input_order() -> None:
    spans = [Span("plan", "release", 0.0, 1.0),
             Span(JOB, AMD, 1.0, 6.0), Span(JOB, ARM, 3.0, 6.0),  # end together
             Span("smoke", ARM, 6.0, 8.0), Span("smoke", AMD, 6.0, 8.0)]  # end together
    want = [("release", "plan", 1.0), (AMD, JOB, 5.0), (AMD, "smoke", 2.0)]
    for seed in range(5):
        shuffled = list(spans)
        random.Random(seed).shuffle(shuffled)
        assert chain(shuffled) == want
    # a job that ended after arm's smoke began is not what the smoke waited for
    late = [Span(JOB, AMD, 0.0, 5.02), Span(JOB, ARM, 0.0, 5.0), Span("smoke", ARM, 5.01, 7.0)]
    assert chain(late) == [(ARM, JOB, 5.0), (ARM, "smoke", 1.99)]


def test_a_failed_run_ends_at_its_last_stage_marked_failed() -> None:
    spans = [Span("plan", "release", 0.0, 1.0),
             Span(JOB, ARM, 1.0, 3.0, False),  # tests failed
             Span(JOB, AMD, 1.0, 6.0), Span("smoke", AMD, 6.0, 7.0, False)]
    path = critical_path(spans)
    assert path is not None
    assert [(s.lane, s.stage, s.ok) for s in path.stages] == [
        ("release", "plan", True), (AMD, JOB, True), (AMD, "smoke", False)]
    assert path.line().endswith("linux/amd64 smoke 1.0 s ✗; slack: linux/arm64 4.0 s")
    assert path.to_json()["stages"][-1]["ok"] is False


def test_no_spans_no_path() -> None:
    assert critical_path([]) is None
    assert critical_path([Span(WAIT_FOR_MODEL, AMD, 0.0, 1.0)]) is None  # idle time only


def test_zero_length_stages_end_the_walk() -> None:
    spans = [Span("a", "release", 1.0, 1.0), Span("b", "release", 1.0, 1.0),
             Span("c", "model", 1.0, 1.0)]
    path = critical_path(spans)
    assert path is not None and len(path.stages) == 3 and path.seconds == 0.0


def test_a_wait_at_the_very_start_leaves_only_the_part_after_it() -> None:
    spans = [Span("train+gate", "model", 0.0, 4.0),
             Span(JOB, AMD, 0.0, 6.0), Span(WAIT_FOR_MODEL, AMD, 0.0, 4.0)]
    assert chain(spans) == [("model", "train+gate", 4.0), (AMD, "release build+push", 2.0)]


def _verdict() -> Verdict:
    return decide(run_id="r1", project="wine", image="127.0.0.1:5999/examples/wine",
                  created="", source=SourceInfo(sha="c0ffee"), expected_platforms=[],
                  platforms=[], model=None, model_required=False, smoke=[],
                  smoke_required=False, emulation_budget_seconds=None)


def test_the_console_summary_and_the_github_summary_print_it() -> None:
    out = io.StringIO()
    print_summary(Console(file=out, width=400), _verdict(), spans=MODEL_BOUND)
    assert "critical path 16.8 s: plan 0.3 s → train+gate 11.2 s" in out.getvalue()
    text = github.step_summary(_verdict(), spans=MODEL_BOUND)
    assert "critical path 16.8 s: plan 0.3 s" in text.split("### Timeline")[1]
    out = io.StringIO()
    print_summary(Console(file=out, width=400), _verdict())
    assert "critical path" not in out.getvalue()
