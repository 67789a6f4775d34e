"""Shared fixtures: a hand-made coefficient vector with known answers, saved as coef.npy.

The model here is `rentals = 10 + 2·temperature + 30·weekend` (every other coefficient 0),
so the expected predictions can be worked out by hand. The tests need no trained model:
they run in the image's test stage, beside (not after) the pipeline's training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from app.features import COLUMNS

NAMES = [name for name, _ in COLUMNS]


def known_coef() -> np.ndarray:
    coef = np.zeros(len(COLUMNS))
    coef[NAMES.index("bias")] = 10.0
    coef[NAMES.index("temperature")] = 2.0
    coef[NAMES.index("weekend")] = 30.0
    return coef


@pytest.fixture
def coef() -> np.ndarray:
    return known_coef()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """coef.npy + registered.json, as the pipeline hands them to the image."""
    folder = tmp_path_factory.mktemp("model")
    np.save(folder / "coef.npy", known_coef(), allow_pickle=False)
    import hashlib
    sha = hashlib.sha256((folder / "coef.npy").read_bytes()).hexdigest()
    (folder / "registered.json").write_text(json.dumps({
        "name": "bikes-demand", "version": "3", "uri": "models:/bikes-demand/3",
        "run_id": "0" * 32, "sha256": sha, "files": ["coef.npy"],
    }))
    return folder
