"""Tests of the sample service; one fails only on arm64 when SAMPLE_FAIL_ON_ARM64=1."""

import os
import pathlib
import platform

from app import add, machine


def test_add() -> None:
    assert add(2, 3) == 5


def test_image_built_for_this_platform() -> None:
    # the RUN step recorded the machine it ran on: emulated builds must say aarch64
    assert pathlib.Path("/app/built-on.txt").read_text().strip() == machine()


def test_not_broken_on_arm64() -> None:
    broken = os.environ.get("SAMPLE_FAIL_ON_ARM64") == "1"
    assert not (broken and platform.machine() == "aarch64"), "simulated arm64-only bug"
