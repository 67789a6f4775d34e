"""Reports: GitHub step summary/outputs/masks, GitLab junit/dotenv/metrics, console progress and summary.

Files are written to tmp paths and parsed back; a registered secret must appear in none of them.
"""

from __future__ import annotations

import io
import re
import secrets
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from ci.core import junit
from ci.core.model import PromoteResult
from ci.core.outcome import DeployResult, PublishResult, ReleaseOutcome
from ci.core.redact import register
from ci.core.results import FailureDetail, PlatformResult, SourceInfo, TestSummary
from ci.core.verdict import ModelVerdict, SmokeResult, Verdict, decide
from ci.reports import github, gitlab
from ci.reports.summary import Progress, Span, print_summary

AMD, ARM = "linux/amd64", "linux/arm64"
IMAGE = "127.0.0.1:5000/wine"
DIGEST = "sha256:" + "ab" * 32


def result(p: str, placement: str, *, ok: bool = True, stderr: str = "") -> PlatformResult:
    return PlatformResult(
        project="wine", image=IMAGE, platform=p, runner="local", engine="docker",
        placement=placement, status="passed" if ok else "failed",  # type: ignore[arg-type]
        digest="sha256:" + ("11" if p == AMD else "22") * 32 if ok else None,
        tests=TestSummary(total=4, passed=4 if ok else 3, failed=0 if ok else 1, seconds=1.5),
        durations={"test": 2.5, "build": 4.0}, emulated_seconds=6.5 if placement == "emulated" else 0.0,
        failure=None if ok else FailureDetail(step="test", message="tests failed: 1 of 4",
                                              exit_code=1, stderr_tail=stderr),
    )


def model(ok: bool = True) -> ModelVerdict:
    return ModelVerdict(
        registered_model="wine-clf", alias="champion", run_id="r1", candidate_version="3",
        champion_version="2", passed=ok, reason="" if ok else "accuracy fell by 0.04",
        metrics={"accuracy": 0.91, "f1 score": 0.88}, baseline={"accuracy": 0.95, "f1 score": 0.87},
        deltas={"accuracy": -0.04, "f1 score": 0.01},
    )


def smoke(p: str, placement: str, ok: bool = True) -> SmokeResult:
    return SmokeResult(
        platform=p, placement=placement, reference=f"{IMAGE}@sha256:{'11' * 32}",  # type: ignore[arg-type]
        requests=50, errors=0 if ok else 5, error_rate=0.0 if ok else 0.1, p50_ms=2.0, p95_ms=4.5,
        bound_ms=250 if placement == "native" else 2500, max_error_rate=0.0, passed=ok,
        reason="" if ok else "error rate 10.0% > 0.0%", seconds=1.2,
    )


def verdict(*, ok: bool = True, stderr: str = "", budget: float | None = 100.0,
            extra: list[str] | None = None) -> Verdict:
    return decide(
        run_id="run-7", project="wine", image=IMAGE, created="2024-01-01T00:00:00Z",
        source=SourceInfo(sha="c0ffee" * 6 + "abcd", ref="refs/heads/main", branch="main",
                          run_url="https://ci.example/run/7"),
        expected_platforms=[AMD, ARM],
        platforms=[result(AMD, "native"), result(ARM, "emulated", ok=ok, stderr=stderr)],
        model=model(ok), model_required=True,
        smoke=[smoke(AMD, "native", ok)] + ([smoke(ARM, "emulated")] if ok else []),
        smoke_required=True, emulation_budget_seconds=budget, extra_reasons=extra,
    )


SPANS = [
    Span("test", AMD, 100.0, 102.5), Span("build", AMD, 102.5, 106.5),
    Span("test", ARM, 100.0, 104.0), Span("build", ARM, 104.0, 110.0, False),
    Span("train", "model", 100.2, 103.0),
]


# ---------------------------------------------------------------- GitHub


def test_step_summary_tables_and_gantt() -> None:
    text = github.step_summary(verdict(), spans=SPANS, index_digest=DIGEST, tags=["sha-c0ffee", "main"],
                               deploy_commit="d" * 40, promoted_version="3")
    assert text.startswith("## ✅ Release published")
    assert f"`{DIGEST}`" in text and "`sha-c0ffee`" in text
    rows = [line for line in text.splitlines() if line.startswith("| linux/")]
    assert len(rows) == 2
    assert "🟢 native" in rows[0] and "| 6.5 |" in rows[0] and "4/4 passed" in rows[0]
    assert "🟡 emulated" in rows[1] and "4.5 ms (≤ 2500)" in rows[1]
    assert "| accuracy | 0.91 | 0.95 | -0.04 |" in text
    assert "| f1 score | 0.88 | 0.87 | +0.01 |" in text
    mermaid = text.split("```mermaid\n", 1)[1].split("```", 1)[0].splitlines()
    assert mermaid[0] == "gantt"
    sections = [line.strip().removeprefix("section ") for line in mermaid
                if line.strip().startswith("section")]
    assert sections == [AMD, ARM, "model"]
    assert "    build (6.0s) :crit, 4000, 10000" in mermaid
    assert "    train (2.8s) :done, 200, 3000" in mermaid


def test_step_summary_rejected_lists_reasons() -> None:
    text = github.step_summary(verdict(ok=False))
    assert text.startswith("## ❌ Release rejected")
    why = text.split("### Why it was rejected", 1)[1].split("###", 1)[0]
    assert "- linux/arm64: tests failed: 1 of 4" in why
    assert "- model gate: accuracy fell by 0.04" in why
    assert "- linux/amd64: smoke: error rate 10.0% > 0.0%" in why
    assert "❌ failed" in text and "```mermaid" not in text


def test_mermaid_names_are_sanitised_and_zero_length_spans_visible() -> None:
    lines = github.gantt([("push: by digest; #1", "lane:x", 5.0, 5.0)], title="t")
    assert "    section lane x" in lines
    assert "    push by digest 1 (0.0s) :done, 0, 1" in lines


def test_outputs_file_key_value_and_heredoc(tmp_path: Path) -> None:
    text = github.step_outputs({"a": "1", "b": None, "multi": "x\ny"})
    lines = text.splitlines()
    assert lines[:2] == ["a=1", "b="]
    delim = lines[2].split("<<", 1)[1]
    assert lines[2:] == [f"multi<<{delim}", "x", "y", delim]


def test_publish_report_masks_first_then_writes_files(tmp_path: Path) -> None:
    secret = "pw-" + secrets.token_hex(8)
    token = "tok-" + secrets.token_hex(8)
    register(secret)
    register(token)
    v = verdict(ok=False, stderr=f"login failed for {secret}", extra=[f"publish: token {token} refused"])
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    summary.write_text("earlier step\n")
    out = io.StringIO()
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output)}
    assert github.publish_report(v, environ=env, stream=out, spans=SPANS, index_digest=None)
    printed = out.getvalue().splitlines()
    assert f"::add-mask::{secret}" in printed and f"::add-mask::{token}" in printed
    assert all(line.startswith("::add-mask::") for line in printed)
    md = summary.read_text()
    assert md.startswith("earlier step\n## ❌ Release rejected")
    assert "publish: token *** refused" in md
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert outputs == {"index-digest": "", "model-version": "3", "image": IMAGE, "reference": "",
                       "verdict": "rejected"}
    for path in (summary, output):
        assert secret not in path.read_text() and token not in path.read_text()


def test_publish_report_off_github_does_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    assert not github.publish_report(verdict(), environ={"GITHUB_STEP_SUMMARY": str(tmp_path / "s")},
                                     stream=out)
    assert out.getvalue() == "" and not (tmp_path / "s").exists()


def test_mask_commands_escape_and_split_lines() -> None:
    assert github.mask_commands(["a%b\nsecond"]) == ["::add-mask::a%25b", "::add-mask::second"]


# ---------------------------------------------------------------- GitLab


def test_gitlab_files_parse_back(tmp_path: Path) -> None:
    paths = gitlab.write_reports(verdict(), tmp_path / "reports", index_digest=DIGEST, spans=SPANS)
    root = ET.parse(paths["junit"]).getroot()
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == [f"tests {AMD} (native)", f"tests {ARM} (emulated)", "model gate wine-clf v3",
                     f"smoke {AMD}", f"smoke {ARM}", "emulation budget"]
    assert root.find("testsuite").get("failures") == "0"  # type: ignore[union-attr]
    summary = junit.parse(paths["junit"].read_text())
    assert summary.total == 6 and summary.ok
    env = paths["dotenv"].read_text().splitlines()
    assert all(re.fullmatch(r"[A-Z_]+=[^\n]*", line) for line in env)
    values = dict(line.split("=", 1) for line in env)
    assert values["INDEX_DIGEST"] == DIGEST and values["MODEL_VERSION"] == "3"
    assert values["IMAGE"] == IMAGE and values["VERDICT"] == "passed"
    metrics = paths["metrics"].read_text().splitlines()
    assert metrics[-1] == "# EOF"
    parsed = {}
    for line in metrics[:-1]:
        name, value = line.split(" ")  # GitLab splits on whitespace: labels must hold none
        parsed[name] = float(value)
    assert parsed["maci_release_passed"] == 1
    assert parsed['maci_platform_seconds{platform="linux/arm64",placement="emulated"}'] == 6.5
    assert parsed['maci_smoke_p95_ms{platform="linux/amd64",placement="native"}'] == 4.5
    assert parsed["maci_model_f1_score_delta"] == 0.01
    assert parsed['maci_stage_seconds{lane="linux/arm64",stage="build"}'] == 6.0


def test_gitlab_junit_failures_carry_reasons() -> None:
    v = verdict(ok=False, stderr="E   assert 1 == 2", budget=5.0, extra=["publish: registry down"])
    root = ET.fromstring(gitlab.junit_xml(v))
    failures = {c.get("name"): c.find("failure") for c in root.iter("testcase")}
    arm = failures[f"tests {ARM} (emulated)"]
    assert arm is not None and arm.get("message") == "linux/arm64: tests failed: 1 of 4"
    assert "E   assert 1 == 2" in (arm.text or "")
    assert failures[f"tests {AMD} (native)"] is None
    assert "accuracy fell by 0.04" in failures["model gate wine-clf v3"].get("message", "")  # type: ignore[union-attr]
    assert "error rate 10.0%" in failures[f"smoke {AMD}"].get("message", "")  # type: ignore[union-attr]
    assert f"smoke {ARM}" not in failures  # the platform failed: its smoke never ran, no extra case
    assert "6 s emulated > 5 s" in failures["emulation budget"].get("message", "")  # type: ignore[union-attr]
    assert failures["verdict"].get("message") == "publish: registry down"  # type: ignore[union-attr]
    s = junit.parse(gitlab.junit_xml(v))
    assert s.failed == 5 and not s.ok
    rejected = ET.fromstring(gitlab.junit_xml(verdict(ok=False)))
    assert "verdict" not in {c.get("name") for c in rejected.iter("testcase")}


def test_dotenv_flattens_and_rejects_bad_names() -> None:
    assert gitlab.dotenv({"A": "x\ny", "B": None}) == "A=x y\nB=\n"
    with pytest.raises(ValueError, match="dotenv variable"):
        gitlab.dotenv({"BAD-NAME": "x"})


def test_no_secret_in_any_report_file(tmp_path: Path) -> None:
    secret = "s3cr3t-" + secrets.token_hex(8)
    register(secret)
    v = verdict(ok=False, stderr=f"password={secret}", extra=[f"deploy: {secret}"])
    files = list(gitlab.write_reports(v, tmp_path, index_digest=None).values())
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "sum.md"),
           "GITHUB_OUTPUT": str(tmp_path / "out")}
    github.publish_report(v, environ=env, stream=io.StringIO(), spans=SPANS)
    files += [tmp_path / "sum.md", tmp_path / "out"]
    console = Console(file=io.StringIO(), width=200)
    print_summary(console, v)
    assert len(files) == 5
    for path in files:
        assert secret not in path.read_text(), path
    assert "***" in (tmp_path / "maci-junit.xml").read_text()
    assert secret not in console.file.getvalue()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- console


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_and_spans_when_not_a_tty() -> None:
    buf = io.StringIO()
    clock = Clock()
    progress = Progress(Console(file=buf, width=200), clock=clock)
    assert not progress.live_mode
    with progress:
        progress.lane(ARM, placement="emulated")
        progress.stage_started(ARM, "test")
        clock.now += 3.25
        progress.stage_finished(ARM, "test", True, "4/4 passed")
        progress.stage_started(AMD, "build", placement="native")
        clock.now += 1
        progress.stage_finished(AMD, "build", False, "exit 1")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4
    assert re.match(r"\d\d:\d\d:\d\d linux/arm64\s+test\s+started \(emulated\)$", lines[0])
    assert lines[1].endswith("test       ok 3.2 s (emulated): 4/4 passed")
    assert lines[3].endswith("build      FAILED 1.0 s (native): exit 1")
    assert progress.spans == [Span("test", ARM, 1_700_000_000.0, 1_700_000_003.25, True),
                              Span("build", AMD, 1_700_000_003.25, 1_700_000_004.25, False)]
    assert "gantt" in github.gantt(progress.spans)


def test_progress_live_table_renders_lanes() -> None:
    progress = Progress(Console(file=io.StringIO(), width=200), live=True, clock=Clock())
    progress.lane(ARM, "emulated")
    progress.stage_started(AMD, "test", placement="native")
    progress.stage_finished(AMD, "test", True)
    progress.stage_started(AMD, "build", detail="[not markup]")
    out = Console(file=io.StringIO(), width=200, record=True)
    out.print(progress.table())
    text = out.export_text()
    assert "emulated" in text and "waiting" in text and "running" in text
    assert "test 0.0s" in text and "[not markup]" in text


def test_final_summary_published() -> None:
    console = Console(file=io.StringIO(), width=220, record=True)
    print_summary(console, verdict(), outcome(DIGEST, ["main"], "d" * 12, "3"))
    text = console.export_text()
    assert text.startswith("RELEASED 127.0.0.1:5000/wine")
    assert f"index digest: {DIGEST}" in text
    assert re.search(r"linux/amd64\s+│\s+native\s+│\s+passed\s+│\s+6.5", text)
    assert re.search(r"linux/arm64\s+│\s+emulated\s+│\s+passed\s+│\s+6.5", text)
    assert "model gate v3 vs champion v2: passed; accuracy 0.91 (champion 0.95, -0.04)" in text
    assert "deploy commit: dddddddddddd" in text
    assert "promoted version: 3 (alias champion)" in text


def test_final_summary_rejected_shows_reasons_literally() -> None:
    console = Console(file=io.StringIO(), width=220, record=True)
    print_summary(console, verdict(ok=False, extra=["deploy: [bold]refused[/bold]"]))
    text = console.export_text()
    assert text.startswith("REJECTED (nothing published)")
    assert "✗ deploy: [bold]refused[/bold]" in text
    assert "✗ linux/arm64: tests failed: 1 of 4" in text
    assert "deploy commit: -" in text and "promoted version: -" in text
    assert "model gate v3 vs champion v2: failed (accuracy fell by 0.04)" in text


def outcome(digest: str, tags: list[str], commit: str, version: str) -> ReleaseOutcome:
    """A release outcome as the stages would leave it (published, deployed, promoted)."""
    return ReleaseOutcome(
        published=PublishResult(image="127.0.0.1:5000/wine", digest=digest, tags=tags,
                                platforms=["linux/amd64", "linux/arm64"], manifests={}),
        deployed=DeployResult(commit=commit, branch="main", remote="r", changed_files=(),
                              changes=(), diff="", attempts=1, dry_run=False, pushed=True,
                              sequence=1),
        promoted=PromoteResult(registered_model="wine", alias="champion", version=version,
                               previous_version=None, deploy_commit=commit, changed=True),
    )
