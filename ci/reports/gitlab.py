"""GitLab CI reports: a JUnit file (one testcase per gate), a dotenv file and a metrics file.

The texts are built by pure functions from the verdict; `write_reports` writes them to a
folder the job lists under `artifacts:reports` (junit, dotenv, metrics). All text is redacted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from ci.core.redact import redact
from ci.core.verdict import Verdict
from ci.reports.github import SpanLike

JUNIT_FILE = "maci-junit.xml"
DOTENV_FILE = "maci.env"
METRICS_FILE = "metrics.txt"


def _case(suite: ET.Element, classname: str, name: str, seconds: float, failure: list[str],
          out: str = "", detail: str = "") -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")
    if failure:
        node = ET.SubElement(case, "failure", message=redact("; ".join(failure))[:1000])
        node.text = redact("\n".join(failure) + (f"\n\n{detail}" if detail else ""))
    if out:
        ET.SubElement(case, "system-out").text = redact(out)


def junit_xml(verdict: Verdict) -> str:
    """One testcase per gate: tests per platform, the model gate, smoke per platform, budget.

    Each verdict reason lands in the testcase of its gate; reasons no gate claims (for example
    from a failed step outside the gates) fail a final `verdict` testcase, so none is lost.
    """
    reasons = list(verdict.reasons)

    def claim(pred: str | tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[str]:
        got = [r for r in reasons if r.startswith(pred) and not r.startswith(exclude)]
        for r in got:
            reasons.remove(r)
        return got

    root = ET.Element("testsuites", name=f"multiarch-ci {verdict.project}")
    suite = ET.SubElement(root, "testsuite", name=f"release gates {verdict.run_id}".strip())
    results = {r.platform: r for r in verdict.platforms}
    platforms = [*verdict.expected_platforms, *sorted(set(results) - set(verdict.expected_platforms))]
    for p in platforms:
        r = results.get(p)
        failure = claim(f"{p}: ", exclude=(f"{p}: smoke",))
        placement = r.placement if r else "unavailable"
        out, detail = "", ""
        if r is not None and r.tests is not None:
            t = r.tests
            out = (f"{t.passed}/{t.total} passed, {t.failed} failed, {t.errors} errors,"
                   f" {t.skipped} skipped in {t.seconds:.1f} s ({placement})")
        if r is not None and r.failure is not None:
            detail = "\n".join(x for x in (r.failure.stderr_tail, r.failure.stdout_tail) if x)
        if r is not None and not r.ok and not failure:
            failure = [f"{p}: {r.status}"]
        _case(suite, "maci.platform", f"tests {p} ({placement})", r.seconds if r else 0.0,
              failure, out, detail)
    model_failure = claim("model")
    if verdict.model is not None or model_failure:
        m = verdict.model
        out = "" if m is None else "\n".join(
            f"{k}: candidate {m.metrics.get(k)} champion {m.baseline.get(k)}"
            for k in sorted(set(m.metrics) | set(m.baseline)))
        if m is not None and not m.passed and not model_failure:
            model_failure = [f"model gate: {m.reason or 'failed'}"]
        name = f"model gate {m.registered_model} v{m.candidate_version or '?'}" if m else "model gate"
        _case(suite, "maci.model", name, 0.0, model_failure, out)
    smoked = {s.platform: s for s in verdict.smoke}
    for p in platforms:
        s = smoked.get(p)
        failure = claim(f"{p}: smoke")
        if s is None and not failure:
            continue
        out = "" if s is None else (
            f"{s.requests} requests, {s.errors} errors, p50 {s.p50_ms:.1f} ms, p95 {s.p95_ms:.1f} ms"
            f" (bound {s.bound_ms:g} ms, {s.placement}) in {s.seconds:.1f} s")
        if s is not None and not s.passed and not failure:
            failure = [f"{p}: smoke: {s.reason or 'failed'}"]
        _case(suite, "maci.smoke", f"smoke {p}", s.seconds if s else 0.0, failure, out)
    budget_failure = claim("emulation budget")
    if verdict.emulation_budget_seconds is not None or budget_failure:
        _case(suite, "maci.budget", "emulation budget", verdict.emulated_seconds, budget_failure,
              f"{verdict.emulated_seconds:.0f} s emulated")
    if reasons:
        _case(suite, "maci.verdict", "verdict", 0.0, reasons)
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    suite.set("time", f"{sum(float(c.get('time') or 0) for c in cases):.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def dotenv(values: Mapping[str, str | None]) -> str:
    """KEY=VALUE lines as GitLab's `artifacts:reports:dotenv` reads them (no quotes, one line)."""
    lines = []
    for key, value in values.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"not a dotenv variable name: {key!r}")
        flat = re.sub(r"[\r\n]+", " ", value or "")
        lines.append(f"{key}={redact(flat)}")
    return "\n".join(lines) + "\n" if lines else ""


def dotenv_for(verdict: Verdict, *, index_digest: str | None,
               model_version: str | None = None) -> dict[str, str | None]:
    version = model_version or (verdict.model.candidate_version if verdict.model else None)
    return {
        "INDEX_DIGEST": index_digest,
        "MODEL_VERSION": version,
        "IMAGE": verdict.image,
        "IMAGE_REFERENCE": f"{verdict.image}@{index_digest}" if index_digest else "",
        "VERDICT": "passed" if verdict.passed else "rejected",
    }


def _label(value: str) -> str:
    """A label value GitLab's whitespace-split parser survives (OpenMetrics escapes, no spaces)."""
    value = re.sub(r"\s+", "_", value)
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _name(value: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", value)


def metrics_text(verdict: Verdict, *, spans: Sequence[SpanLike] = ()) -> str:
    """OpenMetrics-style `name{labels} value` lines for `artifacts:reports:metrics`."""
    lines = [f"maci_release_passed {int(verdict.passed)}",
             f"maci_emulated_seconds {verdict.emulated_seconds:g}"]
    for r in verdict.platforms:
        lab = f'platform="{_label(r.platform)}",placement="{r.placement}"'
        lines.append(f"maci_platform_seconds{{{lab}}} {r.seconds:g}")
        lines.append(f"maci_platform_passed{{{lab}}} {int(r.ok)}")
        if r.tests is not None:
            lines.append(f"maci_platform_tests_passed{{{lab}}} {r.tests.passed}")
            lines.append(f"maci_platform_tests_failed{{{lab}}} {r.tests.failed + r.tests.errors}")
    for s in verdict.smoke:
        lab = f'platform="{_label(s.platform)}",placement="{s.placement}"'
        lines.append(f"maci_smoke_p95_ms{{{lab}}} {s.p95_ms:g}")
        lines.append(f"maci_smoke_p50_ms{{{lab}}} {s.p50_ms:g}")
        lines.append(f"maci_smoke_error_rate{{{lab}}} {s.error_rate:g}")
    if verdict.model is not None:
        m = verdict.model
        lines.append(f"maci_model_gate_passed {int(m.passed)}")
        for k, v in sorted(m.metrics.items()):
            lines.append(f"maci_model_{_name(k)} {v:g}")
        for k, v in sorted(m.deltas.items()):
            lines.append(f"maci_model_{_name(k)}_delta {v:g}")
    for span in spans:
        lab = f'lane="{_label(span[1])}",stage="{_label(span[0])}"'
        lines.append(f"maci_stage_seconds{{{lab}}} {max(float(span[3]) - float(span[2]), 0):.3f}")
    lines.append("# EOF")
    return redact("\n".join(lines) + "\n")


def write_reports(
    verdict: Verdict,
    directory: Path,
    *,
    index_digest: str | None = None,
    model_version: str | None = None,
    spans: Sequence[SpanLike] = (),
) -> dict[str, Path]:
    """Write junit, dotenv and metrics files into `directory`; returns {kind: path}."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = {
        "junit": (JUNIT_FILE, junit_xml(verdict)),
        "dotenv": (DOTENV_FILE, dotenv(dotenv_for(verdict, index_digest=index_digest,
                                                  model_version=model_version))),
        "metrics": (METRICS_FILE, metrics_text(verdict, spans=spans)),
    }
    paths: dict[str, Path] = {}
    for kind, (name, text) in texts.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths[kind] = path
    return paths
