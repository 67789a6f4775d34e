"""The stdlib linear model: known answers, input checking, malformed model files."""

from __future__ import annotations

import json
import math

import pytest
from app.model import LinearModel, ModelError

# (a, b) -> z = ((a-1)/2, (b-2)/4); logits = [z0, z1, -z0-z1]
CASES = [({"a": 11.0, "b": 2.0}, "x"), ({"a": 1.0, "b": 22.0}, "y"), ({"a": -9.0, "b": -18.0}, "z")]


@pytest.mark.parametrize(("features", "expected"), CASES)
def test_predicts_known_class(model_dict: dict, features: dict, expected: str) -> None:
    pred = LinearModel.from_dict(model_dict).predict(features)
    assert pred.name == expected
    assert pred.label == ["x", "y", "z"].index(expected)
    assert math.isclose(sum(pred.probabilities.values()), 1.0, abs_tol=1e-5)
    assert pred.probabilities[expected] == max(pred.probabilities.values())


def test_softmax_matches_hand_computation(model_dict: dict) -> None:
    pred = LinearModel.from_dict(model_dict).predict([3.0, 6.0])  # z = (1, 1)
    logits = [1.0, 1.0, -2.0]
    total = sum(math.exp(v) for v in logits)
    assert pred.probabilities["x"] == pytest.approx(math.exp(1) / total, abs=1e-6)
    assert pred.probabilities["z"] == pytest.approx(math.exp(-2) / total, abs=1e-6)


def test_binary_model_uses_one_coefficient_row() -> None:
    model = LinearModel.from_dict({
        "format": "maci-linear/1", "features": ["a"], "mean": [0.0], "scale": [1.0],
        "coef": [[2.0]], "intercept": [0.0], "classes": [0, 1], "class_names": ["no", "yes"],
    })
    assert model.predict([1.0]).name == "yes"
    assert model.predict([-1.0]).name == "no"
    assert model.predict([1.0]).probabilities["yes"] == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-6)


def test_extra_features_are_ignored_and_missing_ones_named(model_dict: dict) -> None:
    model = LinearModel.from_dict(model_dict)
    assert model.predict({"a": 11.0, "b": 2.0, "unused": 1}).name == "x"
    with pytest.raises(ModelError, match="missing features: b"):
        model.predict({"a": 1.0})


@pytest.mark.parametrize("bad", [[1.0], "a=1", {"a": "1", "b": 2}, {"a": True, "b": 2},
                                 [1.0, float("nan")]])
def test_bad_features_are_refused(model_dict: dict, bad: object) -> None:
    with pytest.raises(ModelError):
        LinearModel.from_dict(model_dict).predict(bad)


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "other/9"}, "unsupported model format"),
    ({"scale": [1.0, 0.0]}, "zeros"),
    ({"mean": [1.0]}, "same non-zero length"),
    ({"coef": [[1.0, 0.0]]}, "row"),
    ({"class_names": ["x"]}, "two classes|name"),
    ({"coef": "nope"}, "malformed"),
])
def test_malformed_models_are_refused(model_dict: dict, change: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        LinearModel.from_dict({**model_dict, **change})


def test_load_reports_unreadable_file(tmp_path) -> None:
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read model"):
        LinearModel.load(tmp_path / "model.json")
    with pytest.raises(ModelError, match="cannot read model"):
        LinearModel.load(tmp_path / "absent.json")


def test_model_file_round_trips(model_dict: dict, tmp_path) -> None:
    (tmp_path / "model.json").write_text(json.dumps(model_dict))
    assert LinearModel.load(tmp_path / "model.json") == LinearModel.from_dict(model_dict)
