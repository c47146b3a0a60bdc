"""Compat denominators as the release's scorers compute them (issue 9, point 5; PARITY.md rows C1, C2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sefe.evaluation.scorers import score_predictions
from tests.helpers.scoring import short_records

WritePreds = Callable[..., Path]
WriteJson = Callable[[str, Any], Path]


def test_scienceqa_divides_by_distinct_prediction_ids_outside_the_split_included(
    write_json: WriteJson, write_preds: WritePreds
) -> None:
    problems = {
        "1": {"question": "q1", "choices": ["x", "y"], "answer": 1},
        "2": {"question": "q2", "choices": ["x", "y"], "answer": 0},
        "3": {"question": "q3", "choices": ["x", "y"], "answer": 0},
        "77": {"question": "a train item", "choices": ["x", "y"], "answer": 0},
    }
    gt = write_json("sqa/problems.json", problems).parent
    write_json("sqa/pid_splits.json", {"train": ["77"], "test": ["1", "2", "3"]})
    ann = write_json(
        "sqa_test.json", [{"question_id": q, "text": "Q\nA. x\nB. y", "answer": "A"} for q in "123"]
    )
    # "2" repeats: the last line ("A", right) is kept; "77" is outside the split; "3" has no prediction
    preds = write_preds([("1", "B"), ("2", "B"), ("77", "A"), ("2", "A")])
    res = score_predictions("ScienceQA", preds, ann, gt=gt)
    assert (res.correct, res.total) == (2, 3)  # distinct ids {1, 2, 77}
    assert res.accuracy == pytest.approx(200 / 3)
    assert res.unknown_ids == ["77"] and res.missing == 1
    legacy = score_predictions("ScienceQA", preds, ann, gt=gt, variant="coin-legacy")
    assert (legacy.correct, legacy.total) == (2, 3)  # CoIN's older scorer: the whole split


def test_gqa_counts_a_repeated_id_once_with_its_last_line(
    write_json: WriteJson, write_preds: WritePreds
) -> None:
    gt = write_json(
        "testdev_balanced_questions.json",
        {
            "g1": {"question": "?", "answer": "yes", "isBalanced": True},
            "g2": {"question": "?", "answer": "table", "isBalanced": True},
        },
    )
    ann = write_json("gqa_test.json", short_records([("g1", "yes"), ("g2", "table")]))
    preds = write_preds([("g1", "yes"), ("g2", "Table"), ("g1", "no")])
    res = score_predictions("GQA", preds, ann, gt=gt)
    assert (res.correct, res.total) == (1, 2)  # g1 counts once, with "no"
