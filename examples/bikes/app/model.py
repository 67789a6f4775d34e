"""The regression model: one numpy file, `coef.npy` (float64, one coefficient per design
column), loaded with `allow_pickle=False` — plain binary numbers, no pickled objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.features import N_COLUMNS, FeatureError, design, row

MODEL_FILE = "coef.npy"


class ModelError(ValueError):
    """A model file that is not a coefficient vector for these features."""


def check(coef: Any) -> np.ndarray:
    coef = np.asarray(coef)
    if coef.dtype != np.float64 or coef.shape != (N_COLUMNS,):
        raise ModelError(f"want float64 coefficients of shape ({N_COLUMNS},), "
                         f"got {coef.dtype} {coef.shape}")
    if not np.isfinite(coef).all():
        raise ModelError("coefficients must be finite")
    return coef


def predict(coef: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Rentals per hour for (n, 5) raw inputs; demand is never negative."""
    return np.maximum(design(raw) @ coef, 0.0)


class DemandModel:
    def __init__(self, coef: Any) -> None:
        self.coef = check(coef)

    @classmethod
    def load(cls, path: Path) -> DemandModel:
        try:
            return cls(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            if isinstance(exc, ModelError):
                raise
            raise ModelError(f"cannot read model {path}: {exc}") from None

    def predict_many(self, items: list[Any]) -> list[float]:
        rows = [row(item) for item in items]
        return [round(float(v), 3) for v in predict(self.coef, np.array(rows))]

    def predict_one(self, features: Any) -> float:
        return self.predict_many([features])[0]


__all__ = ["MODEL_FILE", "DemandModel", "FeatureError", "ModelError", "check", "predict"]
