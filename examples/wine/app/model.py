"""The portable linear model (`model.json`, format maci-linear/1) evaluated with the stdlib.

train.py exports the fitted StandardScaler + LogisticRegression as plain numbers, so the
serving image (Debian python3, no numpy or scikit-learn, also built for arm64 under qemu)
predicts with `math` alone: z = (x - mean) / scale; logits = coef . z + intercept; softmax.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "maci-linear/1"


class ModelError(ValueError):
    """A model file or a request that does not fit the model."""


@dataclass(frozen=True)
class Prediction:
    label: int
    name: str
    probabilities: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.name, "label": self.label, "probabilities": self.probabilities}


@dataclass(frozen=True)
class LinearModel:
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[list[float]]
    intercept: list[float]
    classes: list[int]
    class_names: list[str]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearModel:
        if data.get("format") != FORMAT:
            raise ModelError(f"unsupported model format {data.get('format')!r}, want {FORMAT}")
        try:
            model = cls(
                features=[str(f) for f in data["features"]],
                mean=[float(v) for v in data["mean"]],
                scale=[float(v) for v in data["scale"]],
                coef=[[float(v) for v in row] for row in data["coef"]],
                intercept=[float(v) for v in data["intercept"]],
                classes=[int(c) for c in data["classes"]],
                class_names=[str(c) for c in data["class_names"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed model: {exc!r}") from None
        model._check()
        return model

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read model {path}: {exc}") from None

    def _check(self) -> None:
        n = len(self.features)
        if n == 0 or len(self.mean) != n or len(self.scale) != n:
            raise ModelError("features, mean and scale must have the same non-zero length")
        if any(s == 0 for s in self.scale):
            raise ModelError("scale must not contain zeros")
        if len(self.classes) < 2 or len(self.class_names) != len(self.classes):
            raise ModelError("need at least two classes, each with a name")
        rows = 1 if len(self.classes) == 2 else len(self.classes)
        if len(self.coef) != rows or len(self.intercept) != rows:
            raise ModelError(f"coef/intercept must have {rows} row(s) for {len(self.classes)} classes")
        if any(len(row) != n for row in self.coef):
            raise ModelError(f"every coef row needs {n} values")

    def vector(self, features: Any) -> list[float]:
        """Features in model order, from {name: value} (extra names ignored) or a list."""
        if isinstance(features, dict):
            missing = [f for f in self.features if f not in features]
            if missing:
                raise ModelError(f"missing features: {', '.join(missing)}")
            values = [features[f] for f in self.features]
        elif isinstance(features, list):
            if len(features) != len(self.features):
                raise ModelError(f"expected {len(self.features)} values, got {len(features)}")
            values = features
        else:
            raise ModelError("features must be an object {name: number} or a list of numbers")
        out = []
        for name, value in zip(self.features, values, strict=True):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ModelError(f"feature {name!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ModelError(f"feature {name!r} must be finite")
            out.append(float(value))
        return out

    def predict(self, features: Any) -> Prediction:
        x = self.vector(features)
        z = [(v - m) / s for v, m, s in zip(x, self.mean, self.scale, strict=True)]
        logits = [sum(c * v for c, v in zip(row, z, strict=True)) + b
                  for row, b in zip(self.coef, self.intercept, strict=True)]
        if len(self.classes) == 2:  # scikit-learn keeps one row for binary problems
            logits = [0.0, logits[0]]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        probs = [e / total for e in exps]
        best = max(range(len(probs)), key=probs.__getitem__)
        return Prediction(
            label=self.classes[best],
            name=self.class_names[best],
            probabilities={n: round(p, 6) for n, p in zip(self.class_names, probs, strict=True)},
        )
