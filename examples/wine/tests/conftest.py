"""Shared fixtures: a tiny hand-made model (2 features, 3 classes) with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """model.json + registered.json, read-only."""
    return DATA


@pytest.fixture
def model_dict() -> dict:
    return json.loads((DATA / "model.json").read_text())
