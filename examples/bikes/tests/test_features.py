"""The design matrix and request checking: shapes, the feature mask, periodic hours."""

from __future__ import annotations

import math

import numpy as np
import pytest
from app.features import COLUMNS, FEATURES, N_COLUMNS, FeatureError, design, mask, row


def test_design_has_one_column_per_name() -> None:
    raw = np.array([[20.0, 0.5, 10.0, 8.0, 1.0], [5.0, 0.9, 30.0, 23.0, 6.0]])
    x = design(raw)
    assert x.shape == (2, N_COLUMNS) and x.dtype == np.float64
    names = [name for name, _ in COLUMNS]
    assert x[:, names.index("bias")].tolist() == [1.0, 1.0]
    assert x[:, names.index("temperature_sq")].tolist() == [400.0, 25.0]
    assert x[:, names.index("weekend")].tolist() == [0.0, 1.0]
    # weekend columns are zero on working days
    weekend_cols = [i for i, n in enumerate(names) if n.startswith("weekend_")]
    assert not x[0, weekend_cols].any() and x[1, weekend_cols].any()


def test_hour_harmonics_wrap_around_midnight() -> None:
    names = [name for name, _ in COLUMNS]
    at = {h: design(np.array([[15.0, 0.5, 5.0, h, 2.0]]))[0] for h in (0.0, 6.0, 12.0)}
    assert at[0.0][names.index("hour_cos1")] == pytest.approx(1.0)
    assert at[6.0][names.index("hour_sin1")] == pytest.approx(1.0)
    assert at[12.0][names.index("hour_cos1")] == pytest.approx(-1.0)
    assert at[12.0][names.index("hour_cos2")] == pytest.approx(math.cos(2 * math.pi))


def test_mask_keeps_the_columns_of_the_first_inputs() -> None:
    names = np.array([name for name, _ in COLUMNS])
    assert names[mask(1)].tolist() == ["bias", "temperature", "temperature_sq"]
    assert mask(0).all() and mask(len(FEATURES)).all()
    assert not any(n.startswith("weekend") for n in names[mask(4)])


def test_design_refuses_the_wrong_shape() -> None:
    with pytest.raises(FeatureError, match="rows of 5"):
        design(np.zeros((2, 4)))


def test_row_from_names_or_a_list() -> None:
    named = {"temperature": 20, "humidity": 0.5, "windspeed": 10, "hour": 8, "weekday": 1,
             "ignored": "x"}
    assert row(named) == [20.0, 0.5, 10.0, 8.0, 1.0]
    assert row([20, 0.5, 10, 8, 1]) == [20.0, 0.5, 10.0, 8.0, 1.0]


@pytest.mark.parametrize(("bad", "message"), [
    ({"temperature": 20}, "missing features: humidity"),
    ([1.0, 2.0], "expected 5 values"),
    ("t=20", "object"),
    ([20, 0.5, 10, True, 1], "must be a number"),
    ([20, 1.5, 10, 8, 1], "humidity.*within 0..1"),
    ([20, 0.5, 10, 24, 1], "hour.*within 0..23"),
    ([float("nan"), 0.5, 10, 8, 1], "temperature"),
])
def test_bad_requests_are_refused(bad: object, message: str) -> None:
    with pytest.raises(FeatureError, match=message):
        row(bad)
