"""The numpy model file: known answers, the binary format, malformed files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from app.features import N_COLUMNS
from app.model import DemandModel, ModelError, check, predict

WORKDAY = {"temperature": 20.0, "humidity": 0.5, "windspeed": 10.0, "hour": 8, "weekday": 2}


def test_known_answers(coef: np.ndarray) -> None:
    model = DemandModel(coef)
    assert model.predict_one(WORKDAY) == pytest.approx(50.0)  # 10 + 2·20
    assert model.predict_one({**WORKDAY, "weekday": 6}) == pytest.approx(80.0)  # + 30 weekend
    assert model.predict_many([WORKDAY, [0.0, 0.5, 10.0, 8, 2]]) == pytest.approx([50.0, 10.0])


def test_demand_is_never_negative(coef: np.ndarray) -> None:
    raw = np.array([[-30.0, 0.5, 10.0, 3.0, 1.0]])  # 10 - 60 < 0
    assert predict(coef, raw).tolist() == [0.0]


def test_model_file_is_a_little_endian_float64_npy(model_dir: Path) -> None:
    """The artifact is plain bytes every platform reads the same (all three are little-endian)."""
    data = (model_dir / "coef.npy").read_bytes()
    assert data[:6] == b"\x93NUMPY"
    assert b"'descr': '<f8'" in data[:128] and f"'shape': ({N_COLUMNS},)".encode() in data[:128]
    assert DemandModel.load(model_dir / "coef.npy").coef.tolist() == DemandModel(
        np.load(model_dir / "coef.npy")).coef.tolist()


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "coef.npy", np.array([{"a": 1}] * N_COLUMNS, dtype=object),
            allow_pickle=True)
    with pytest.raises(ModelError, match="cannot read model"):
        DemandModel.load(tmp_path / "coef.npy")


@pytest.mark.parametrize(("value", "message"), [
    (np.zeros(3), "shape"),
    (np.zeros(N_COLUMNS, dtype=np.float32), "float64"),
    (np.full(N_COLUMNS, np.nan), "finite"),
])
def test_malformed_coefficients_are_refused(value: np.ndarray, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        check(value)


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "coef.npy").write_bytes(b"not numpy")
    with pytest.raises(ModelError, match="cannot read model"):
        DemandModel.load(tmp_path / "coef.npy")
    with pytest.raises(ModelError, match="cannot read model"):
        DemandModel.load(tmp_path / "absent.npy")
