"""The repaired `short` checker and the answer pools, on the answers Micro-CoIN's demo collapsed to.

In the v1 demo's LoRA run, Colour and Shape answered `triangle`, then `box`, then `[0.3` for every item and
those cells read 0 % format errors: a box fragment and a bare Yes/No passed as short answers, and an answer
from another task's pool is not a matter of form at all (the out-of-pool rate and the from-pool matrix).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.evaluation.answer_pools import (
    answers_include_yes_no,
    from_pools,
    normalise,
    out_of_pool_rate,
    read_pool,
)
from sefe.evaluation.format_checks import format_errors, in_style
from tests.helpers.root_tasks import declare

POOLS = {
    "Colour": ["red", "green", "blue", "yellow", "purple", "orange"],
    "Shape": ["circle", "square", "triangle", "diamond", "star"],
    "Side": ["Yes", "No"],
    "Count": ["A", "B", "C", "D"],
    "Word": ["sun", "cat", "box", "map"],
    "Locate": ["[0.04, 0.04, 0.29, 0.29]", "[0.38, 0.04, 0.62, 0.29]"],
}
STYLES = {"Colour": "short", "Shape": "short", "Side": "yesno", "Count": "letter", "Word": "short"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tasks = [{"name": t, "style": STYLES.get(t, "box"), "scorer": "VQAv2"} for t in POOLS]
    root = declare(tmp_path / "micro", *tasks)
    for task, answers in POOLS.items():
        folder = root / "annotations" / task
        folder.mkdir(parents=True)
        (folder / "distractors.json").write_bytes(orjson.dumps({"task": task, "answers": answers}))
    return root


@pytest.mark.parametrize("text", ["[0.3", "[0.69, 0.", "0.3]", ".", "?!", "...", "B)", "(C", "D:", "-"])
def test_short_rejects_box_fragments_punctuation_and_option_letters(text: str) -> None:
    assert not in_style("short", text)


@pytest.mark.parametrize("text", ["triangle", "box", "red", "Yes", "3.5", "two dogs"])
def test_short_still_accepts_phrases_and_numbers(text: str) -> None:
    assert in_style("short", text)


def test_the_demos_collapse_answers_are_format_errors_where_another_style_is_asked(root: Path) -> None:
    colour_q = ["What colour is the object?\nAnswer the question using a single word or phrase."] * 3
    side_q = ["Is the object on the left side?\nAnswer with Yes or No."] * 2
    count_q = ["How many shapes are in the image?\nA. one\nB. two\nAnswer with the option's letter."] * 2
    locate_q = ["Please provide the bounding box coordinate of the region this sentence describes: the star."]
    # `[0.3` where a short answer is asked: a format error now (it read 0 % before)
    assert format_errors("Colour", colour_q, ["[0.3", "[0.3", "red"], root=root).errors == 2
    # `triangle` and `box` where Yes/No, a letter or a box is asked
    assert format_errors("Side", side_q, ["triangle", "box"], root=root).rate == 100.0
    assert format_errors("Count", count_q, ["triangle", "[0.3"], root=root).rate == 100.0
    assert format_errors("Locate", locate_q, ["box"], root=root).rate == 100.0
    # a bare Yes is a short answer only where the task's answers include one
    assert format_errors("Colour", colour_q[:1], ["Yes"], root=root).errors == 1
    assert format_errors("VQAv2", colour_q[:1], ["Yes"]).errors == 0
    assert format_errors("ImageNet", colour_q[:1], ["No"]).errors == 1
    # `triangle` for Colour is well formed: that takeover is what the pools see
    assert format_errors("Colour", colour_q[:1], ["triangle"], root=root).errors == 0


def test_yes_no_is_decided_by_the_pool_then_by_the_coin_task(root: Path) -> None:
    assert answers_include_yes_no("Side", root) and not answers_include_yes_no("Colour", root)
    assert answers_include_yes_no("GQA") and answers_include_yes_no("vizwiz")
    assert not answers_include_yes_no("ImageNet") and not answers_include_yes_no("ScienceQA")
    assert answers_include_yes_no("SomethingUnknown")  # no evidence: not counted against the answer


def test_out_of_pool_rate_and_answers_from_another_tasks_pool(root: Path) -> None:
    pools = {t: p for t in POOLS if (p := read_pool(root, t)) is not None}
    assert normalise(" Red. ") == "red" and normalise("[0.04,  0.04, 0.29, 0.29 ]") == normalise(
        POOLS["Locate"][0]
    )
    colour_answers = [
        "triangle",
        "triangle",
        "box",
        "[0.3",
        "red",
        "Red.",
        "[0.04, 0.04, 0.29, 0.29]",
        "dunno",
    ]
    # in Colour's pool: red, Red. -> 6 of 8 are out of it
    assert out_of_pool_rate(colour_answers, pools["Colour"]) == 75.0
    shares = from_pools(colour_answers, "Colour", pools)
    assert shares == {"Shape": 25.0, "Side": 0.0, "Count": 0.0, "Word": 12.5, "Locate": 12.5}
    assert out_of_pool_rate([], pools["Colour"]) is None and from_pools([], "Colour", pools) == {}


def test_pool_falls_back_to_the_gold_answers_of_test_json(tmp_path: Path) -> None:
    folder = tmp_path / "annotations" / "VQAv2"
    folder.mkdir(parents=True)
    recs = [
        {"question_id": "1", "text": "q", "answer": "Two"},
        {"question_id": "2", "text": "q", "answer": "yes"},
    ]
    (folder / "test.json").write_bytes(orjson.dumps(recs))
    assert read_pool(tmp_path, "VQAv2") == frozenset({"two", "yes"})
    assert read_pool(tmp_path, "GQA") is None
