"""Shared test configuration: fixture modules live in tests/fixtures/ (one per service)."""

import pathlib

pytest_plugins = [
    f"tests.fixtures.{p.stem}"
    for p in sorted((pathlib.Path(__file__).parent / "fixtures").glob("*.py"))
    if p.stem not in {"__init__", "procs"}
]
