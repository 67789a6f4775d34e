"""Number formatting shared by the BENCHMARKS.md renderers (bench/report.py, perf_report.py)."""

from __future__ import annotations

from typing import Any


def s(v: Any, unit: str = " s", nd: int = 1) -> str:
    """`12.3 s (11.9-13.0, n=5)` for a summary, `12.3 s` for a number, `-` for nothing."""
    if v is None:
        return "-"
    if isinstance(v, dict):
        if v.get("median") is None:
            return "-"
        out = f"{v['median']:.{nd}f}{unit}"
        if v["n"] > 1:
            out += f" ({v['min']:.{nd}f}-{v['max']:.{nd}f}, n={v['n']})"
        return out
    return f"{float(v):.{nd}f}{unit}"


def med(v: Any) -> float | None:
    return v.get("median") if isinstance(v, dict) else v


def x(v: Any) -> str:
    v = med(v)
    return "-" if v is None else f"{v:.2f}x"


def ok(met: bool | None) -> str:
    return "-" if met is None else ("**met**" if met else "**not met**")


def load(v: dict[str, Any]) -> str:
    return "-" if v.get("median") is None else f"{v['median']:.1f} ({v['min']:.1f}-{v['max']:.1f})"


def mb(v: Any) -> str:
    v = med(v)
    return "-" if v is None else f"{v / 1e6:.1f} MB"


def kib(v: Any) -> str:
    v = med(v)
    return "-" if v is None else f"{v / 1024:.1f} KiB"
