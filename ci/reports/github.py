"""GitHub Actions reports: step summary, step outputs and secret masks (adapter over env files).

The markdown is built by pure functions from the verdict; `publish_report` is the one place
that touches $GITHUB_STEP_SUMMARY / $GITHUB_OUTPUT. It prints `::add-mask::` for every
registered secret before anything else, and every text goes through `ci.redact.redact`.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ci.core.critical_path import critical_path
from ci.core.redact import redact, registered
from ci.core.verdict import Verdict

# (stage, lane, start, end[, ok]) with start/end in seconds (epoch or monotonic, same clock)
SpanLike = tuple[str, str, float, float] | tuple[str, str, float, float, bool]

_ICON = {"native": "🟢 native", "emulated": "🟡 emulated", "unavailable": "🔴 unavailable"}


def _cell(text: object) -> str:
    """A markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def mask_commands(secrets: Iterable[str]) -> list[str]:
    """`::add-mask::` workflow commands, one per non-empty line of each secret (escaped)."""
    out: list[str] = []
    for secret in sorted(secrets):
        for line in secret.splitlines():
            if line.strip():
                value = line.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
                out.append(f"::add-mask::{value}")
    return out


def verdict_table(verdict: Verdict) -> list[str]:
    smoke = {s.platform: s for s in verdict.smoke}
    rows = ["| platform | placement | status | seconds | tests | smoke p95 |",
            "| --- | --- | --- | ---: | --- | --- |"]
    results = {r.platform: r for r in verdict.platforms}
    for p in [*verdict.expected_platforms, *sorted(set(results) - set(verdict.expected_platforms))]:
        r = results.get(p)
        s = smoke.get(p)
        smoke_cell = "-" if s is None else (
            f"{'✅' if s.passed else '❌'} {s.p95_ms:.1f} ms (≤ {s.bound_ms:g}), "
            f"{s.errors}/{s.requests} errors")
        if r is None:
            rows.append(f"| {_cell(p)} | - | ❌ no result | - | - | {smoke_cell} |")
            continue
        t = r.tests
        tests = "-" if t is None else f"{t.passed}/{t.total} passed" + (
            f", {t.failed} failed" if t.failed else "") + (f", {t.errors} errors" if t.errors else "")
        status = "✅ passed" if r.ok else f"❌ {r.status}"
        rows.append(f"| {_cell(p)} | {_ICON[r.placement]} | {status} | {r.seconds:.1f} | {_cell(tests)} "
                    f"| {_cell(smoke_cell)} |")
    return rows


def metrics_table(verdict: Verdict) -> list[str]:
    m = verdict.model
    if m is None:
        return []
    head = (f"Model `{_cell(m.registered_model)}` candidate v{m.candidate_version or '?'} vs "
            f"`{_cell(m.alias)}` " + (f"v{m.champion_version}" if m.champion_version else "(none yet)")
            + f": {'✅ passed' if m.passed else '❌ ' + _cell(m.reason or 'failed')}")
    rows = [head, "", "| metric | candidate | champion | delta |", "| --- | ---: | ---: | ---: |"]
    for name in sorted(set(m.metrics) | set(m.baseline)):
        delta = m.deltas.get(name)
        if delta is None and name in m.metrics and name in m.baseline:
            delta = m.metrics[name] - m.baseline[name]
        shown = "-" if delta is None else f"{delta:+.4g}"
        rows.append(f"| {_cell(name)} | {_num(m.metrics.get(name))} | {_num(m.baseline.get(name))} "
                    f"| {shown} |")
    return rows


def _mermaid_text(text: str) -> str:
    """Mermaid gantt names cannot hold `:`, `#` or `;`."""
    return re.sub(r"[:#;\s]+", " ", text).strip() or "-"


def gantt(spans: Sequence[SpanLike], title: str = "run") -> list[str]:
    """A Mermaid gantt: one section per lane, tasks at milliseconds from the first start."""
    if not spans:
        return []
    t0 = min(float(s[2]) for s in spans)
    lines = ["```mermaid", "gantt", f"    title {_mermaid_text(title)}", "    dateFormat x",
             "    axisFormat %M:%S"]
    lanes: dict[str, list[SpanLike]] = {}
    for span in sorted(spans, key=lambda s: float(s[2])):
        lanes.setdefault(span[1], []).append(span)
    for lane, items in lanes.items():
        lines.append(f"    section {_mermaid_text(lane)}")
        for span in items:
            start = round((float(span[2]) - t0) * 1000)
            end = max(round((float(span[3]) - t0) * 1000), start + 1)
            ok = span[4] if len(span) > 4 else True
            lines.append(f"    {_mermaid_text(span[0])} ({(end - start) / 1000:.1f}s) "
                         f":{'done' if ok else 'crit'}, {start}, {end}")
    lines.append("```")
    return lines


def step_summary(
    verdict: Verdict,
    *,
    spans: Sequence[SpanLike] = (),
    index_digest: str | None = None,
    tags: Sequence[str] = (),
    deploy_commit: str | None = None,
    promoted_version: str | None = None,
) -> str:
    """The whole markdown summary of a release run (pure; redacted)."""
    title = "✅ Release published" if verdict.passed and index_digest else (
        "✅ All gates passed" if verdict.passed else "❌ Release rejected")
    lines = [f"## {title}: `{verdict.image}`", ""]
    src = verdict.source
    facts = [("run", verdict.run_id), ("commit", src.sha), ("ref", src.ref or src.branch),
             ("index digest", f"`{index_digest}`" if index_digest else None),
             ("tags", ", ".join(f"`{t}`" for t in tags) or None),
             ("deploy commit", f"`{deploy_commit}`" if deploy_commit else None),
             ("promoted model version", promoted_version)]
    lines += [f"- **{k}**: {v}" for k, v in facts if v]
    if verdict.emulated_seconds:
        budget = verdict.emulation_budget_seconds
        lines.append(f"- **emulated seconds**: {verdict.emulated_seconds:.0f}"
                     + (f" (budget {budget:g})" if budget is not None else ""))
    if verdict.reasons:
        lines += ["", "### Why it was rejected", ""] + [f"- {_cell(r)}" for r in verdict.reasons]
    lines += ["", "### Platforms", "", *verdict_table(verdict)]
    if verdict.model is not None:
        lines += ["", "### Metrics vs champion", "", *metrics_table(verdict)]
    if spans:
        lines += ["", "### Timeline", "", *gantt(spans, title=f"run {verdict.run_id}")]
        path = critical_path(spans)
        if path is not None:
            lines += ["", _cell(path.line())]
    return redact("\n".join(lines) + "\n")


def step_outputs(values: Mapping[str, str | None]) -> str:
    """`name=value` lines for $GITHUB_OUTPUT; multi-line values use the heredoc form."""
    out: list[str] = []
    for key, value in values.items():
        text = redact(value or "")
        if "\n" in text or "\r" in text:
            delim = f"ghadelimiter_{uuid.uuid4().hex}"
            out.append(f"{key}<<{delim}\n{text}\n{delim}")
        else:
            out.append(f"{key}={text}")
    return "\n".join(out) + "\n" if out else ""


def outputs_for(verdict: Verdict, *, index_digest: str | None,
                model_version: str | None = None) -> dict[str, str | None]:
    version = model_version or (verdict.model.candidate_version if verdict.model else None)
    return {
        "index-digest": index_digest or "",
        "model-version": version or "",
        "image": verdict.image,
        "reference": f"{verdict.image}@{index_digest}" if index_digest else "",
        "verdict": "passed" if verdict.passed else "rejected",
    }


def _append(path: str, text: str) -> None:
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(text)


def publish_report(
    verdict: Verdict,
    *,
    environ: Mapping[str, str],
    stream: TextIO | None = None,
    spans: Sequence[SpanLike] = (),
    index_digest: str | None = None,
    tags: Sequence[str] = (),
    deploy_commit: str | None = None,
    promoted_version: str | None = None,
) -> bool:
    """On GitHub Actions: masks first, then the step summary and outputs. False elsewhere."""
    if environ.get("GITHUB_ACTIONS") != "true":
        return False
    out = stream or sys.stdout
    for line in mask_commands(registered()):
        out.write(line + "\n")
    out.flush()
    summary_path = environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        _append(summary_path, step_summary(
            verdict, spans=spans, index_digest=index_digest, tags=tags,
            deploy_commit=deploy_commit, promoted_version=promoted_version,
        ))
    output_path = environ.get("GITHUB_OUTPUT")
    if output_path:
        _append(output_path, step_outputs(outputs_for(
            verdict, index_digest=index_digest, model_version=promoted_version)))
    return True
