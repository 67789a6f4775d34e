"""train.py on this platform's numpy: a small fit recovers the demand, the knob degrades it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import train


def test_generated_data_is_deterministic() -> None:
    a, ya = train.generate(3, 200, 12.0)
    b, yb = train.generate(3, 200, 12.0)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert (ya >= 0).all() and a.shape == (200, 5)


def _rmse(features: int) -> float:
    raw, y = train.generate(5, 1200, 12.0)
    coef = train.fit(raw[:900], y[:900], features)
    return float(np.sqrt(np.mean((train.predict(coef, raw[900:]) - y[900:]) ** 2)))


def test_least_squares_fits_and_one_feature_is_clearly_worse() -> None:
    full, temperature_only = _rmse(0), _rmse(1)
    assert full < 18.0
    assert temperature_only > 2 * full


def test_main_writes_metrics_and_the_npy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACI_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("MACI_PARAMS", json.dumps({"rows": 600}))
    assert train.main() == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"rmse", "mae", "r2"} and metrics["mae"] <= metrics["rmse"]
    coef = np.load(tmp_path / "artifacts" / "model" / "coef.npy", allow_pickle=False)
    assert coef.dtype == np.float64 and coef.shape == (len(train.COLUMNS),)


def test_unknown_params_are_an_error() -> None:
    with pytest.raises(SystemExit, match="unknown params"):
        train.load_params({"MACI_PARAMS": '{"alpha": 1}'})
