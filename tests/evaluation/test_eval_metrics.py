"""MFT / MFN / MAA / BWT against a matrix worked out by hand; partial matrices; save/load."""

from __future__ import annotations

from pathlib import Path

import pytest

from sefe.evaluation.metrics import AccuracyMatrix, bwt, compute_metrics
from sefe.evaluation.scorers import ScoreResult

# A[k][i], k = after stage, i = task
HAND = [[80.0], [60.0, 70.0], [50.0, 40.0, 90.0]]


def _matrix(rows: list[list[float]]) -> AccuracyMatrix:
    m = AccuracyMatrix(tasks=["ScienceQA", "TextVQA", "ImageNet"])
    for k, row in enumerate(rows):
        for i, v in enumerate(row):
            m.set(k, i, v)
    return m


def test_metrics_by_hand() -> None:
    m = compute_metrics(_matrix(HAND))
    assert m.stages == 3 and m.complete
    assert pytest.approx(80.0) == m.MFT  # (80 + 70 + 90) / 3
    assert pytest.approx(60.0) == m.MFN  # (50 + 40 + 90) / 3
    assert pytest.approx((80 + 65 + 60) / 3) == m.MAA
    assert pytest.approx(-30.0) == m.BWT  # ((50-80) + (40-70)) / 2
    assert m.BWT_all == pytest.approx(-20.0)  # same sum over all 3 tasks
    assert set(m.bwt_definitions) == {"BWT", "BWT_all"}


def test_partial_matrix_uses_complete_rows() -> None:
    m = _matrix([HAND[0], HAND[1], [50.0]])  # stage 3 evaluated only task 1 so far
    assert m.complete_stages() == 2
    met = m.metrics()
    assert (met.stages, met.complete) == (2, False)
    assert pytest.approx(75.0) == met.MFT
    assert pytest.approx(65.0) == met.MFN
    assert pytest.approx(72.5) == met.MAA
    assert pytest.approx(-20.0) == met.BWT
    assert bwt(m, "BWT_all") == pytest.approx(-10.0)
    one = _matrix([[42.0]]).metrics()
    assert (one.MFT, one.MFN, one.BWT, one.BWT_all) == (42.0, 42.0, None, 0.0)
    empty = AccuracyMatrix(tasks=["A"]).metrics()
    assert (empty.stages, empty.MFT, empty.BWT) == (0, None, None)


def test_set_validation() -> None:
    m = AccuracyMatrix(tasks=["A", "B"])
    with pytest.raises(IndexError):
        m.set(0, 1, 50.0)  # upper triangle
    with pytest.raises(IndexError):
        m.set(2, 0, 50.0)  # no third task
    with pytest.raises(ValueError, match="percentage"):
        m.set(0, 0, 0.5 * 300)
    with pytest.raises(ValueError, match="lower-triangular"):
        AccuracyMatrix(tasks=["A", "B"], rows=[[1.0, 2.0]])


def test_save_load_round_trip_and_record(tmp_path: Path) -> None:
    m = _matrix(HAND)
    res = ScoreResult(task="ScienceQA", mode="compat", accuracy=55.5, correct=111, total=200, missing=3)
    m.record(2, 0, res)
    path = tmp_path / "run" / "accuracy.json"
    m.save(path)
    back = AccuracyMatrix.load(path)
    assert back == m and back.get(2, 0) == 55.5 and back.details["2,0"]["missing"] == 3
    assert not list(path.parent.glob(".*tmp"))  # no temp file left behind
    with pytest.raises(ValueError, match="'fixed' score cannot go into a 'compat'"):
        m.record(0, 0, res.model_copy(update={"mode": "fixed"}))
    path.write_text("{broken")
    with pytest.raises(ValueError, match=r"accuracy\.json: broken JSON"):
        AccuracyMatrix.load(path)
