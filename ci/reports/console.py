"""Console rendering with rich: the plan table and the doctor report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ci.core.plan import Plan, RunnerInfo

_STYLE = {"native": "green", "emulated": "yellow", "unavailable": "red"}


_FROM = {"engine": "the engine", "declared": "declared", "host": "this host"}


def _runner_line(runner: RunnerInfo) -> str:
    """One runner under the table: its native platform, where that came from, any note."""
    if not runner.reachable:
        return f"runner {escape(runner.name)}: unreachable: {escape(runner.error or 'no answer')}"
    source = f" (from {_FROM[runner.platform_source]})" if runner.platform_source else ""
    line = f"runner {escape(runner.name)}: native {runner.native or '-'}{source}"
    return f"{line}; [yellow]{escape(runner.note)}[/]" if runner.note else line


def plan_table(plan: Plan) -> Table:
    """The jobs, one row each; under it every runner's native platform and its source."""
    table = Table(title=f"plan: {plan.project} → {plan.image}", title_justify="left",
                  caption="\n".join(_runner_line(r) for r in plan.runners) or None,
                  caption_justify="left")
    for col in ("platform", "placement", "runner", "engine", "reason"):
        table.add_column(col)
    for job in plan.jobs:
        p = job.placement
        table.add_row(
            job.platform, f"[{_STYLE[p.kind]}]{p.kind}[/]", p.runner or "-", p.engine or "-",
            p.reason,
        )
    return table


def print_plan(plan: Plan, console: Console) -> None:
    console.print(plan_table(plan))
    if plan.training:
        t = plan.training
        console.print(f"train: {' '.join(t.command)} → {t.registered_model} (alias {t.alias}),"
                      f" tracking {t.tracking_uri}")
    console.print("gates: " + "; ".join(plan.gates))
    console.print(f"publish: {plan.publish.image} tags {', '.join(plan.publish.tags)}")
    if plan.deploy:
        console.print(f"deploy: {plan.deploy.remote} ({plan.deploy.branch}): "
                      + ", ".join(plan.deploy.manifests))
    for job in plan.jobs:
        if job.base is not None and job.base.status == "unchecked":
            console.print(f"[yellow]base not checked[/]: {escape(job.base.line(job.platform))}")
    for job in plan.unavailable:
        console.print(f"[red]unavailable[/]: {job.platform}: {job.placement.reason}")
    for job in plan.missing_bases:
        if job.base is not None:
            console.print(f"[red]missing base[/]: {escape(job.base.line(job.platform))}")


def print_doctor(report: dict[str, Any], console: Console) -> None:
    def mark(ok: bool) -> str:
        return "[green]ok[/]" if ok else "[red]FAIL[/]"

    table = Table(title="doctor", title_justify="left")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail")
    for r in report["runners"]:
        detail = (f"{r['engine']} {r['version']} native {r['native']}; emulates "
                  f"{', '.join(r['emulates']) or 'nothing'}") if r["reachable"] else r["error"]
        table.add_row(f"runner {r['name']} {r['host'] or '(default)'}", mark(r["reachable"]),
                      detail)
    for row in report.get("push", []):
        table.add_row(f"push {row['runner']}", "[green]ok[/]" if row["route"] == "digest" else
                      "[yellow]tags[/]" if row["ok"] else mark(False), escape(row["line"]))
    bx = report["buildx"]
    table.add_row("docker buildx", mark(bx["ok"]), str(bx["detail"]))
    for h in report["binfmt"]:
        table.add_row(f"binfmt {h['name']}", mark(h["usable_in_containers"]),
                      f"{h['platform']} via {h['interpreter']} flags {h['flags'] or '-'}"
                      + ("" if "F" in h["flags"] else " (no F: fails inside containers)"))
    if not report["binfmt"]:
        table.add_row("binfmt", "[yellow]none[/]", "no qemu handlers: run `ci setup-qemu`")
    d = report["dagger"]
    table.add_row("dagger", "[green]ok[/]" if d["cli"] or d["session"] else "[yellow]absent[/]",
                  f"cli {d['cli'] or '-'}; session {'yes' if d['session'] else 'no'}")
    for key in ("registry", "mlflow"):
        if key in report:
            item = report[key]
            table.add_row(key, mark(item["ok"]),
                          f"{item.get('url') or item.get('uri')}: {item['detail']}")
    for b in report.get("bases", []):
        status = "[yellow]unchecked[/]" if b["status"] == "unchecked" else mark(b["ok"])
        table.add_row(f"base {b['platform']}", status,
                      escape(f"{b['reference']} on runner {b['runner']}: {b['detail']}"))
    if "deploy" in report:
        table.add_row("deploy branch", "[cyan]info[/]", escape(report["deploy"]["line"]))
    console.print(table)
    for b in report.get("bases", []):
        if not b["ok"]:
            console.print(f"[red]missing base[/]: {escape(b['line'])}")
