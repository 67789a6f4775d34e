"""Train the bike-rental demand regression: numpy least squares on a synthetic, seeded dataset.

Run by `ci train` inside the image's `train` stage ([model.container]): the same Debian
python3-numpy the serving image has, no mlflow. It reads its params from MACI_PARAMS (JSON,
from `[model] params`) and writes to MACI_OUTPUT_DIR, which the library logs on the run:

  metrics.json              {"rmse": ..., "mae": ..., "r2": ...} on the held-out split
  params.json               what the data and the fit came out as (rows, columns used)
  artifacts/model/coef.npy  the coefficients (np.save, float64): the registered artifact

Params: seed (data + split), rows, noise (std of the demand noise), test_size, features
(keep only the columns of the first N raw inputs, 0 = all; `1` = temperature only, the
knob that makes a clearly worse model). Run alone: `MACI_OUTPUT_DIR=/tmp/out python3 train.py`.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from app.features import COLUMNS, FEATURES, design, mask
from app.model import MODEL_FILE, predict

DEFAULTS: dict[str, Any] = {"seed": 7, "rows": 4000, "noise": 12.0, "test_size": 0.25,
                            "features": 0}
ARTIFACT = f"model/{MODEL_FILE}"
# The demand the synthetic city really has (rentals per hour), one weight per design column.
TRUE_COEF = np.array([
    49.0, 7.0, -0.12, -60.0, -1.0,                        # bias, temperature, temp², humidity, wind
    -26.0, -42.0, -13.0, -49.0, 12.0, 16.0, 3.0, 3.0,     # commuter peaks at 8 and 17-18 h
    2.0, -8.0, -17.0, 30.0, 58.0,                         # weekends: one broad afternoon hump
])


def load_params(environ: os._Environ[str] | dict[str, str] = os.environ) -> dict[str, Any]:
    """Defaults overlaid with MACI_PARAMS (JSON); unknown params are an error, not ignored."""
    given = json.loads(environ.get("MACI_PARAMS") or "{}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise SystemExit(f"train.py: unknown params {unknown}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **given}
    return {"seed": int(p["seed"]), "rows": int(p["rows"]), "noise": float(p["noise"]),
            "test_size": float(p["test_size"]), "features": int(p["features"])}


def generate(seed: int, rows: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, 5) raw inputs and the rentals per hour: deterministic for a seed."""
    rng = np.random.default_rng(seed)
    day = rng.integers(0, 365, rows)
    season = np.sin(2 * math.pi * (day - 105) / 365)  # warm in July, cold in January
    temperature = np.clip(12 + 11 * season + rng.normal(0, 4, rows), -10, 38)
    humidity = np.clip(rng.beta(5, 3, rows), 0, 1)
    windspeed = np.clip(rng.gamma(2.0, 6.0, rows), 0, 80)
    hour = rng.integers(0, 24, rows).astype(np.float64)
    weekday = (day % 7).astype(np.float64)
    raw = np.column_stack([temperature, humidity, windspeed, hour, weekday])
    demand = design(raw) @ TRUE_COEF + rng.normal(0, noise, rows)
    return raw, np.maximum(demand, 0.0)


def fit(raw: np.ndarray, y: np.ndarray, features: int) -> np.ndarray:
    """Least squares on the kept columns; the dropped ones get a coefficient of 0."""
    keep = mask(features)
    solution, *_ = np.linalg.lstsq(design(raw)[:, keep], y, rcond=None)
    coef = np.zeros(len(COLUMNS))
    coef[keep] = solution
    return coef


def main() -> int:
    params = load_params()
    out = Path(os.environ.get("MACI_OUTPUT_DIR") or "out")
    raw, y = generate(params["seed"], params["rows"], params["noise"])
    order = np.random.default_rng(params["seed"] + 1).permutation(len(y))
    n_test = max(1, round(len(y) * params["test_size"]))
    test, train = order[:n_test], order[n_test:]
    coef = fit(raw[train], y[train], params["features"])
    error = predict(coef, raw[test]) - y[test]
    rmse = float(np.sqrt(np.mean(error**2)))
    metrics = {
        "rmse": rmse,
        "mae": float(np.mean(np.abs(error))),
        "r2": float(1 - np.sum(error**2) / np.sum((y[test] - y[test].mean()) ** 2)),
    }
    (out / "artifacts" / "model").mkdir(parents=True, exist_ok=True)
    np.save(out / "artifacts" / ARTIFACT, coef, allow_pickle=False)
    (out / "metrics.json").write_text(json.dumps(metrics))
    used = [name for (name, _), kept in zip(COLUMNS, mask(params["features"]), strict=True) if kept]
    (out / "params.json").write_text(json.dumps({
        "n_train": len(train), "n_test": len(test), "n_columns": len(used),
        "raw_features": ",".join(FEATURES[: params["features"] or len(FEATURES)]),
        "numpy_version": np.__version__,
    }))
    print(f"rmse {metrics['rmse']:.3f}  mae {metrics['mae']:.3f}  r2 {metrics['r2']:.4f}"
          f"  ({len(used)} columns, numpy {np.__version__})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
