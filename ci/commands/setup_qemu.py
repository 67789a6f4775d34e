"""`ci setup-qemu`: register qemu-user-static binfmt handlers with flag F (needs root)."""

from __future__ import annotations

from ci.adapters import binfmt
from ci.core import platforms
from ci.core.platforms import Platform


def run_setup(wanted: list[Platform] | None) -> list[str]:
    """One line per handler: registered, already there, or replaced (idempotent)."""
    chosen = wanted or [platforms.parse("linux/arm64")]
    return [f"{r.platform}: {r.action} ({r.interpreter}, flags OCF)" for r in binfmt.setup(chosen)]
