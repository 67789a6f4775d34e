"""The design matrix the model is linear in, shared by train.py and the serving app.

Raw inputs (one row per hour): temperature (°C), humidity (0..1), windspeed (km/h),
hour (0..23) and weekday (0 = Monday .. 6 = Sunday). Demand is curved in temperature and
has two commuter peaks on working days but one broad afternoon hump at weekends, so the
columns are: a bias, temperature and its square, humidity, windspeed, four daily harmonics
of the hour (sin/cos of k·2π·hour/24), a weekend flag and two harmonics of the weekend's
own daily profile.

`used` keeps only the columns that depend on the first `used` raw inputs (the bias
always stays): `used = 1` is a temperature-only model, the knob that makes a worse one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FEATURES = ("temperature", "humidity", "windspeed", "hour", "weekday")

# name → the raw inputs (indexes into FEATURES) the column is computed from
HOUR_HARMONICS = 4
WEEKEND_HARMONICS = 2
COLUMNS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("bias", ()),
    ("temperature", (0,)),
    ("temperature_sq", (0,)),
    ("humidity", (1,)),
    ("windspeed", (2,)),
    *((f"hour_{f}{k}", (3,)) for k in range(1, HOUR_HARMONICS + 1) for f in ("sin", "cos")),
    ("weekend", (4,)),
    *((f"weekend_hour_{f}{k}", (3, 4)) for k in range(1, WEEKEND_HARMONICS + 1)
      for f in ("sin", "cos")),
)
N_COLUMNS = len(COLUMNS)
LIMITS = {"temperature": (-30.0, 50.0), "humidity": (0.0, 1.0), "windspeed": (0.0, 150.0),
          "hour": (0.0, 23.0), "weekday": (0.0, 6.0)}


class FeatureError(ValueError):
    """A request whose features do not fit the model."""


def mask(used: int = len(FEATURES)) -> np.ndarray:
    """Which columns a model on the first `used` raw inputs has (0 or less = all)."""
    if used <= 0:
        used = len(FEATURES)
    return np.array([all(i < used for i in deps) for _, deps in COLUMNS])


def design(raw: np.ndarray) -> np.ndarray:
    """(n, 5) raw inputs → (n, N_COLUMNS) design matrix."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(FEATURES):
        raise FeatureError(f"want rows of {len(FEATURES)} values, got shape {raw.shape}")
    temp, hum, wind, hour, day = raw.T
    angle = 2 * math.pi * hour / 24
    weekend = (day >= 5).astype(np.float64)
    cols = [np.ones(len(raw)), temp, temp**2, hum, wind]
    for k in range(1, HOUR_HARMONICS + 1):
        cols += [np.sin(k * angle), np.cos(k * angle)]
    cols.append(weekend)
    for k in range(1, WEEKEND_HARMONICS + 1):
        cols += [weekend * np.sin(k * angle), weekend * np.cos(k * angle)]
    return np.column_stack(cols)


def row(features: Any) -> list[float]:
    """One request's features, in FEATURES order, from {name: number} or a list; checked."""
    if isinstance(features, Mapping):
        missing = [f for f in FEATURES if f not in features]
        if missing:
            raise FeatureError(f"missing features: {', '.join(missing)}")
        values: Sequence[Any] = [features[f] for f in FEATURES]
    elif isinstance(features, list):
        if len(features) != len(FEATURES):
            raise FeatureError(f"expected {len(FEATURES)} values, got {len(features)}")
        values = features
    else:
        raise FeatureError("features must be an object {name: number} or a list of numbers")
    out = []
    for name, value in zip(FEATURES, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FeatureError(f"feature {name!r} must be a number, got {value!r}")
        low, high = LIMITS[name]
        if not (math.isfinite(value) and low <= value <= high):
            raise FeatureError(f"feature {name!r} must be within {low:g}..{high:g}, got {value!r}")
        out.append(float(value))
    return out
