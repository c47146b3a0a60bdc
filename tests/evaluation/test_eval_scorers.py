"""Each CoIN scorer against hand-computed cases, quirks included, in compat and fixed mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sefe.evaluation.scorers import (
    ScoringError,
    box_iou,
    find_gt,
    parse_box_compat,
    parse_box_fixed,
    parse_scienceqa_letter,
    score_predictions,
    textvqa_answer_scores,
)
from tests.helpers.scoring import short_records

WritePreds = Callable[..., Path]
WriteJson = Callable[[str, Any], Path]


# ---- ScienceQA ----------------------------------------------------------------------------------------


@pytest.fixture
def sqa(write_json: WriteJson, write_preds: WritePreds) -> dict[str, Path]:
    problems = {
        "1": {"question": "q1", "choices": ["x", "y", "z"], "answer": 1},
        "2": {"question": "q2", "choices": ["x", "y"], "answer": 0},
        "3": {"question": "q3", "choices": ["a", "b", "c", "d", "e"], "answer": 4},
        "4": {"question": "q4", "choices": ["a", "b", "c", "d"], "answer": 2},
        "5": {"question": "q5", "choices": ["a", "b"], "answer": 1},
        "6": {"question": "q6", "choices": ["a", "b"], "answer": 0},
        "77": {"question": "train item", "choices": ["a", "b"], "answer": 0},
    }
    splits = {
        "train": ["77"],
        "val": [],
        "test": ["1", "2", "3", "4", "5", "6"],
        "minival": [],
        "minitest": [],
    }
    gt = write_json("sqa_gt/problems.json", problems).parent
    write_json("sqa_gt/pid_splits.json", splits)
    letters = {"1": "B", "2": "A", "3": "E", "4": "C", "5": "B", "6": "A"}
    recs = [
        {
            "question_id": q,
            "text": "Q\nA. x\nB. y\nAnswer with the option's letter from the given choices directly.",
            "answer": a,
        }
        for q, a in letters.items()
    ]
    ann = write_json("sqa_test.json", recs)
    preds = write_preds(
        [
            ("1", "B"),  # exact letter: right
            ("2", "C"),  # C is not among this problem's two choices: wrong
            ("3", "E. blue"),  # "X. " prefix: right
            ("4", "I think The answer is C. yes"),  # one regex match: right
            ("5", "The answer is B"),  # the regex needs a character after the letter: FAILED
        ]
    )
    return {"gt": gt, "ann": ann, "preds": preds}


def test_scienceqa_letter_parser() -> None:
    assert parse_scienceqa_letter("A") == "A"
    assert parse_scienceqa_letter("F") == "FAILED"  # not an option at all
    assert parse_scienceqa_letter("B. because") == "B"
    assert parse_scienceqa_letter("B.") == "FAILED"  # too short for the "X. " rule, no regex match
    assert parse_scienceqa_letter("The answer is D.") == "D"
    assert parse_scienceqa_letter("The answer is D") == "FAILED"
    assert parse_scienceqa_letter("The answer is A. The answer is B.") == "FAILED"  # two matches


def test_scienceqa_compat(sqa: dict[str, Path]) -> None:
    res = score_predictions("ScienceQA", sqa["preds"], sqa["ann"], gt=sqa["gt"])
    assert (res.correct, res.total, res.missing) == (3, 5, 1)  # denominator = predictions
    assert res.accuracy == pytest.approx(60.0)
    assert res.gt_source.startswith("official")
    assert any("no prediction" in n for n in res.notes)


def test_scienceqa_legacy_variant(sqa: dict[str, Path]) -> None:
    res = score_predictions("ScienceQA", sqa["preds"], sqa["ann"], gt=sqa["gt"], variant="coin-legacy")
    # "4": first one-character word is "I" -> wrong; "5": "B" -> right; "6" missing counts in the denominator
    assert (res.correct, res.total) == (3, 6)
    assert res.accuracy == pytest.approx(50.0)
    assert res.variant == "coin-legacy"


def test_scienceqa_fixed(sqa: dict[str, Path]) -> None:
    res = score_predictions("ScienceQA", sqa["preds"], sqa["ann"], gt=sqa["gt"], mode="fixed")
    assert (res.correct, res.total, res.missing) == (3, 6, 1)


def test_scienceqa_without_gt_uses_test_answers(sqa: dict[str, Path]) -> None:
    res = score_predictions("ScienceQA", sqa["preds"], sqa["ann"])
    # test records list two options (A, B): "3" (E) and "4" (C) now fall outside the choices
    assert (res.correct, res.total) == (1, 5)
    assert res.gt_source == "test.json"
    assert any("not comparable" in n for n in res.notes)


def test_scienceqa_prediction_outside_test_split(sqa: dict[str, Path], write_preds: WritePreds) -> None:
    preds = write_preds([("1", "B"), ("77", "A")], name="p2.jsonl")
    res = score_predictions("ScienceQA", preds, sqa["ann"], gt=sqa["gt"])
    # the published scorer divides by the distinct prediction ids, "77" (outside the split) included
    assert (res.correct, res.total, res.unknown_ids) == (1, 2, ["77"])


# ---- TextVQA ------------------------------------------------------------------------------------------


def test_textvqa_soft_scores_by_hand() -> None:
    s = textvqa_answer_scores(["red"] * 2 + ["blue"] * 8)
    # red: the 2 red annotators see 1 other red (1/3), the 8 blue ones see 2 (2/3) -> (2/3 + 16/3) / 10
    assert s["red"] == pytest.approx(0.6)
    assert s["blue"] == pytest.approx(1.0)
    s = textvqa_answer_scores(["cat"] + ["dog"] * 9)
    assert s["cat"] == pytest.approx(0.3)  # 9 annotators see one other "cat": 9 * 1/3 / 10
    s = textvqa_answer_scores(["x"] * 3 + ["y"] * 7)
    assert s["x"] == pytest.approx(0.9)  # 3 * 2/3 + 7 * 1, over 10
    s = textvqa_answer_scores(["Two", "2", "two.", "three"] + ["4"] * 6)
    assert s["2"] == pytest.approx(0.9)  # "Two", "2", "two." normalise to one answer given 3 times (as above)


def test_textvqa_compat_and_fixed(write_json: WriteJson, write_preds: WritePreds) -> None:
    gt = write_json(
        "TextVQA_0.5.1_val.json",
        {
            "dataset_name": "textvqa",
            "data": [
                {"question_id": 11, "question": "q", "answers": ["red"] * 2 + ["blue"] * 8},
                {"question_id": 12, "question": "q", "answers": ["cat"] + ["dog"] * 9},
                {"question_id": 13, "question": "q", "answers": ["x"] * 3 + ["y"] * 7},
                {"question_id": 14, "question": "q", "answers": ["z"] * 10},
            ],
        },
    )
    ann = write_json("tv_test.json", short_records([(11, "blue"), (12, "dog"), (13, "y"), (14, "z")]))
    preds = write_preds([("11", "red"), (12, "The Cat."), ("13", "y")])  # ids as str and int: joined on str
    res = score_predictions("TextVQA", preds, ann, gt=gt)
    assert res.correct == pytest.approx(1.9)
    assert res.total == 3 and res.missing == 1
    assert res.accuracy == pytest.approx(190 / 3)
    fixed = score_predictions("TextVQA", preds, ann, gt=gt, mode="fixed")
    assert fixed.total == 4 and fixed.accuracy == pytest.approx(47.5)
    bad = write_preds([("99", "red")], name="bad.jsonl")
    with pytest.raises(ScoringError, match=r"line 1: question_id '99' is not in .*TextVQA_0.5.1_val.json"):
        score_predictions("TextVQA", bad, ann, gt=gt)


# ---- ImageNet -----------------------------------------------------------------------------------------


def test_imagenet_compat_by_position_and_fixed_by_id(write_json: WriteJson, write_preds: WritePreds) -> None:
    ann = write_json(
        "in_test.json",
        short_records([("a", "Espresso maker"), ("b", "Golden retriever"), ("c", "Tabby cat"), ("d", "Dog")]),
    )
    preds = write_preds([("a", "espresso maker"), ("b", ""), ("c", "Tabby")])
    res = score_predictions("ImageNet", preds, ann)
    # case-sensitive: "espresso maker" is wrong; the empty prediction is a substring of anything: right
    assert (res.correct, res.total, res.missing) == (2, 3, 1)
    fixed = score_predictions("ImageNet", preds, ann, mode="fixed")
    assert (fixed.correct, fixed.total, fixed.missing) == (2, 4, 1)  # case-insensitive; empty is wrong
    # compat aligns by position even when the ids say otherwise (and says so)
    swapped = write_preds([("b", "Espresso maker"), ("a", "Golden retriever")], name="swapped.jsonl")
    res = score_predictions("ImageNet", swapped, ann)
    assert res.correct == 2 and any("position" in n for n in res.notes)
    assert score_predictions("ImageNet", swapped, ann, mode="fixed").correct == 0


# ---- GQA ----------------------------------------------------------------------------------------------


def test_gqa(write_json: WriteJson, write_preds: WritePreds) -> None:
    gt = write_json(
        "testdev_balanced_questions.json",
        {
            "g1": {"question": "?", "answer": "yes", "isBalanced": True},
            "g2": {"question": "?", "answer": "table", "isBalanced": True},
            "g3": {"question": "?", "answer": "red", "isBalanced": False},
        },
    )
    ann = write_json("gqa_test.json", short_records([("g1", "Yes"), ("g2", "Table"), ("g3", "Red")]))
    preds = write_preds([("g1", "Yes."), ("g2", "Table. "), ("g3", "red")])
    res = score_predictions("GQA", preds, ann, gt=gt)
    # "Table. " keeps its period: rstrip('.') stops at the trailing space; g3 is unbalanced and not counted
    assert (res.correct, res.total) == (1, 2)
    fixed = score_predictions("GQA", preds, ann, gt=gt, mode="fixed")
    assert (fixed.correct, fixed.total) == (2, 2)
    bad = write_preds([("g1", "yes"), ("g9", "no")], name="bad.jsonl")
    with pytest.raises(ScoringError, match=r"line 2: question_id 'g9'"):
        score_predictions("GQA", bad, ann, gt=gt)


# ---- VizWiz, VQAv2, OCRVQA ----------------------------------------------------------------------------


def test_vizwiz_and_vqav2_upper_equality(write_json: WriteJson, write_preds: WritePreds) -> None:
    ann = write_json("vw_test.json", short_records([(1, "unanswerable"), (2, "red"), (3, "2")]))
    preds = write_preds([("1", "Unanswerable"), ("2", "Red "), (3, "two")])
    for task in ("VizWiz", "VQAv2"):
        res = score_predictions(task, preds, ann)
        assert (res.correct, res.total) == (1, 3)  # no normalisation: "Red " and "two" are wrong
        assert score_predictions(task, preds, ann, mode="fixed").correct == 2  # fixed strips spaces


def test_ocrvqa_unanswerable_rule(write_json: WriteJson, write_preds: WritePreds) -> None:
    ann = write_json(
        "ocr_test.json", short_records([("o1", "Unanswerable"), ("o2", "harry potter"), ("o3", "Yes")])
    )
    preds = write_preds([("o1", "Unanswerable"), ("o2", "Harry Potter"), ("o3", "yes Unanswerable")])
    res = score_predictions("OCRVQA", preds, ann)
    assert (res.correct, res.total) == (1, 3)


# ---- Grounding ----------------------------------------------------------------------------------------


def test_box_parsing_quirk() -> None:
    assert parse_box_compat("[0.12, 0.34, 0.56, 0.78]") == [0.12, 0.34, 0.56, 0.7]  # last digit dropped
    assert parse_box_compat("[0.12, 0.34, 0.56, 0.78].") == [
        0.12,
        0.34,
        0.56,
        0.78,
    ]  # the period goes instead
    assert parse_box_compat("[0.1, 0.2, 0.5, 0.3]") == [0.1, 0.2, 0.5, 0.0]  # "0." parses as 0.0
    assert parse_box_compat("no box") is None
    assert parse_box_compat("[0.1, 0.2, 0.3]") is None
    assert parse_box_fixed("The box is [0.12, 0.34, 0.56, 0.78].") == [0.12, 0.34, 0.56, 0.78]
    assert parse_box_fixed("[1, 2]") is None


def test_box_iou() -> None:
    assert box_iou([0, 0, 1, 1], [0, 0, 1, 0.5]) == pytest.approx(0.5)
    assert box_iou([0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]) == 0.0  # union 0 -> 0
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    # signed areas (reference) vs clipped areas (fixed) for an inverted box overlapping nothing
    assert box_iou([0.5, 0.5, 0.1, 0.1], [0, 0, 0.2, 0.2]) == 0.0


def test_grounding_compat_and_fixed(write_json: WriteJson, write_preds: WritePreds) -> None:
    def rec(q: str, box: str) -> dict[str, Any]:
        return {"question_id": q, "text": "Where?", "answer_bbox": box, "size": [640, 480]}

    ann = write_json(
        "gr_test.json",
        [
            rec("r1", "[0.12, 0.34, 0.56, 0.78]"),
            rec("r2", "[0.1, 0.2, 0.5, 0.3]"),
            rec("r3", "[0.1, 0.2, 0.5, 0.3]"),
            rec("r4", "[0.0, 0.0, 1.0, 1.0]"),
            rec("r5", "[0.0, 0.0, 1.0, 1.0]"),
        ],
    )
    preds = write_preds(
        [
            ("r1", "[0.12, 0.34, 0.56, 0.78]"),  # y2 -> 0.7, IoU 0.36/0.44 = 0.82: right anyway
            ("r2", "[0.1, 0.2, 0.5, 0.3]"),  # y2 -> 0.0: no overlap in compat, exact in fixed
            ("r3", "[0.1, 0.2, 0.5, 0.3]."),  # the period is dropped: right in both
            ("r4", "[0.0, 0.0, 1.0, 0.5]."),  # IoU exactly 0.5: wrong (strict >)
            ("r5", "I cannot tell"),  # unparsable: wrong
        ]
    )
    res = score_predictions("Grounding", preds, ann)
    assert (res.correct, res.total) == (2, 5)
    assert score_predictions("Grounding", preds, ann, mode="fixed").correct == 3


# ---- bad input ----------------------------------------------------------------------------------------


def test_broken_json_line_is_named(tmp_path: Path, write_json: WriteJson) -> None:
    ann = write_json("t.json", short_records([(1, "a"), (2, "b"), (3, "c")]))
    preds = tmp_path / "broken.jsonl"
    preds.write_text('{"question_id": 1, "text": "a"}\n\n{"question_id": 2, "text": "b"\n')
    with pytest.raises(ScoringError, match=r"broken\.jsonl line 3: broken JSON"):
        score_predictions("VQAv2", preds, ann)


def test_missing_field_is_named(tmp_path: Path, write_json: WriteJson) -> None:
    ann = write_json("t.json", short_records([(1, "a")]))
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"question_id": 1, "answer": "a"}\n')
    with pytest.raises(ScoringError, match=r"p\.jsonl line 1 \(question_id 1\): field 'text'"):
        score_predictions("VizWiz", preds, ann)
    bad_ann = write_json(
        "t2.json", [{"question_id": 1, "text": "q", "answer": "a"}, {"question_id": 7, "text": "q"}]
    )
    preds.write_text('{"question_id": 7, "text": "a"}\n')
    with pytest.raises(
        ScoringError, match=r"t2\.json, record 1, id 7, field 'answer': required field is missing"
    ):
        score_predictions("VizWiz", preds, bad_ann)


def test_missing_lines_are_counted_never_hidden(write_json: WriteJson, write_preds: WritePreds) -> None:
    ann = write_json("t.json", short_records([(i, "yes") for i in range(10)]))
    preds = write_preds([(i, "yes") for i in range(7)])
    compat = score_predictions("VQAv2", preds, ann)
    fixed = score_predictions("VQAv2", preds, ann, mode="fixed")
    assert (compat.accuracy, compat.total, compat.missing) == (100.0, 7, 3)
    assert (fixed.accuracy, fixed.total, fixed.missing) == (70.0, 10, 3)


def test_unknown_and_duplicate_ids(write_json: WriteJson, write_preds: WritePreds) -> None:
    ann = write_json("t.json", short_records([(1, "yes"), (2, "no")]))
    unknown = write_preds([(1, "yes"), (5, "no")], name="u.jsonl")
    with pytest.raises(ScoringError, match=r"u\.jsonl line 2: question_id 5 is not in"):
        score_predictions("VQAv2", unknown, ann)
    fixed = score_predictions("VQAv2", unknown, ann, mode="fixed")
    assert fixed.unknown_ids == ["5"] and (fixed.correct, fixed.total, fixed.missing) == (1, 2, 1)
    dup = write_preds([(1, "yes"), (2, "no"), (1, "no")], name="d.jsonl")
    assert score_predictions("VQAv2", dup, ann).duplicates == 1
    with pytest.raises(ScoringError, match=r"d\.jsonl line 3: question_id 1 repeats line 1"):
        score_predictions("VQAv2", dup, ann, mode="fixed")


def test_unknown_task_and_find_gt(tmp_path: Path) -> None:
    with pytest.raises(ScoringError, match="no scorer for task 'Foo'"):
        score_predictions("Foo", tmp_path / "p.jsonl", tmp_path / "t.json")
    release = tmp_path / "GQA" / "testdev_balanced_questions.json"
    bundled = tmp_path / "eval_gt" / "GQA" / "testdev_balanced_questions.json"
    with pytest.raises(ScoringError, match=f"missing {release}, {bundled}"):
        find_gt(tmp_path, "gqa")
    assert find_gt(tmp_path, "gqa", allow_approximate=True) is None
    assert find_gt(tmp_path, "gqa", mode="fixed") is None
    bundled.parent.mkdir(parents=True)
    bundled.write_text("{}")
    assert find_gt(tmp_path, "gqa") == bundled
    release.parent.mkdir(parents=True)
    release.write_text("{}")
    assert find_gt(tmp_path, "gqa") == release  # where the release reads it comes first
    assert find_gt(tmp_path, "VQAv2") is None


def test_repeated_test_ids_count_once_in_fixed_mode(write_json: WriteJson, write_preds: WritePreds) -> None:
    ann = write_json("t.json", short_records([(1, "yes"), (1, "yes"), (2, "no")]))
    preds = write_preds([(1, "yes"), (2, "yes")])
    res = score_predictions("VizWiz", preds, ann, mode="fixed")
    assert (res.correct, res.total) == (1, 2)
    assert any("repeat an earlier question_id" in n for n in res.notes)


def test_every_coin_scorer_name_has_its_scorer() -> None:
    """The scorer names are sefe.coin's; each scorer function declares which one it is."""
    from sefe.coin.tasks import SCORER_NAMES
    from sefe.evaluation import scorers

    assert sorted(scorers._SCORERS) == sorted(SCORER_NAMES)
    assert scorers._SCORERS["VQAv2"] is scorers._score_vqav2
