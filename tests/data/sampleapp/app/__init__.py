"""The sample service: reports the machine it runs on."""

import platform


def machine() -> str:
    return platform.machine()


def add(a: int, b: int) -> int:
    return a + b
