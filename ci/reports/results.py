"""Platform results and the publish outcome for people (rich table) and machines (JSON)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from ci.core.outcome import PublishResult
from ci.core.redact import redact
from ci.core.results import PlatformResult

_STATUS = {"passed": "green", "failed": "red", "error": "red"}
_PLACEMENT = {"native": "green", "emulated": "yellow", "unavailable": "red"}


def _tests(result: PlatformResult) -> str:
    """`3/3 passed`, `2/3 passed (1 failed)`: short enough for an 80-column CI log."""
    t = result.tests
    if t is None:
        return "-"
    text = f"{t.passed}/{t.total} passed"
    bad = [f"{n} {what}" for n, what in ((t.failed, "failed"), (t.errors, "errors"),
                                         (t.skipped, "skipped")) if n]
    return text + (f" ({', '.join(bad)})" if bad else "")


def short_digest(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "-"


def results_table(results: Sequence[PlatformResult], title: str = "platform jobs") -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("platform", "runner", "placement", "status", "tests"):
        table.add_column(col, no_wrap=True)
    for col in ("seconds", "emulated"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("digest", no_wrap=True)
    for r in results:
        table.add_row(
            r.platform, r.runner, f"[{_PLACEMENT[r.placement]}]{r.placement}[/]",
            f"[{_STATUS[r.status]}]{r.status}[/]", _tests(r), f"{r.seconds:.1f}",
            f"{r.emulated_seconds:.1f}" if r.placement == "emulated" else "-",
            short_digest(r.digest),
        )
    return table


def print_results(
    results: Sequence[PlatformResult], console: Console, published: PublishResult | None = None
) -> None:
    # CI logs are not terminals (rich assumes 80 columns there): keep the table on one line
    out = console if console.is_terminal else Console(
        file=console.file, width=max(console.width, 120), highlight=False, soft_wrap=True)
    out.print(results_table(results))
    for r in results:
        if r.placement_reason and r.placement != "native":
            console.print(f"{r.platform}: {r.placement_reason}")
        if r.failure:
            console.print(f"[red]{r.platform}[/]: {r.failure.step}: {r.failure.message}")
            tail = r.failure.stdout_tail or r.failure.stderr_tail
            if tail:
                console.print("\n".join("    " + ln for ln in tail.splitlines()[-15:]),
                              markup=False, highlight=False)
    if published:
        print_published(published, console)


def print_published(published: PublishResult, console: Console) -> None:
    if published.unchanged and not published.tags:
        console.print(f"[green]unchanged[/] {published.reference}: the tags already hold this "
                      "index (same commit, model and bases: same digest); nothing written")
    else:
        console.print(f"[green]published[/] {published.reference}")
    console.print(f"  platforms: {', '.join(published.platforms)}")
    same = f"; unchanged: {', '.join(published.unchanged)}" if published.unchanged else ""
    console.print(f"  tags: {', '.join(published.tags) or '(none)'}{same}  "
                  f"({published.seconds:.2f} s)")


def to_json(
    results: Sequence[PlatformResult],
    published: PublishResult | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The machine-readable report: every result, the publish outcome, and the verdict."""
    return {
        "ok": error is None and all(r.status == "passed" for r in results),
        "results": [
            {**r.model_dump(mode="json"), "seconds": r.seconds} for r in results
        ],
        "publish": {**published.model_dump(mode="json"), "reference": published.reference}
        if published else None,
        "error": error,
    }


def print_refusal(results: Sequence[PlatformResult], message: str, console: Console, *,
                  as_json: bool) -> None:
    """A refused publish (build or merge): the legs it weighed, and why, before the error line."""
    if as_json:
        sys.stdout.write(redact(json.dumps(to_json(results, None, message), indent=2,
                                           default=str)) + "\n")
    elif results:
        print_results(results, console)
