"""Each answer-style checker on hand-made answers, style detection from instruction lines, per-task rates."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.coin.root_tasks import RootTaskError
from sefe.evaluation.format_checks import (
    detect_style,
    format_errors,
    format_errors_of_predictions,
    in_style,
    question_style,
    task_style,
)
from tests.helpers.root_tasks import declare


@pytest.mark.parametrize("text", ["B", "B.", "(C)", " A ", "E"])
def test_letter_accepts(text: str) -> None:
    assert in_style("letter", text)


@pytest.mark.parametrize("text", ["b", "BC", "B. because it is red", "red", "", "The answer is B."])
def test_letter_rejects(text: str) -> None:
    assert not in_style("letter", text)


@pytest.mark.parametrize("text", ["Yes", "no", "NO.", "yes!"])
def test_yesno_accepts(text: str) -> None:
    assert in_style("yesno", text)


@pytest.mark.parametrize("text", ["Yes, it is red.", "maybe", "A", "[0.1, 0.2, 0.3, 0.4]", "yess"])
def test_yesno_rejects(text: str) -> None:
    assert not in_style("yesno", text)


@pytest.mark.parametrize("text", ["red", "Espresso maker", "3", "two dogs", "3.5", "12:30", "Yes", "sun."])
def test_short_accepts(text: str) -> None:
    assert in_style("short", text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "B",  # a lone option letter: an MCQ task's style took over
        "[0.12, 0.34, 0.56, 0.78]",  # a box
        "red. The circle is red because its pixels are red.",  # answer + explanation
        "one two three four five six seven eight nine ten eleven",  # too long
        "red\nblue",
    ],
)
def test_short_rejects(text: str) -> None:
    assert not in_style("short", text)


@pytest.mark.parametrize("text", ["[0.12, 0.34, 0.56, 0.78]", "[0, 0, 1, 1].", "[.1,.2,.3,.4]"])
def test_box_accepts(text: str) -> None:
    assert in_style("box", text)


@pytest.mark.parametrize(
    "text", ["[0.1, 0.2, 0.3]", "0.1, 0.2, 0.3, 0.4", "[a, b, c, d]", "red", "[1,2,3,4] x"]
)
def test_box_rejects(text: str) -> None:
    assert not in_style("box", text)


@pytest.mark.parametrize(
    "text",
    [
        "red. The circle is drawn in a bright red colour.",
        "B. Option B names the colour of the square.",
        "[0.1, 0.2, 0.5, 0.6] The blue square in the top left corner.",
        "Yes, because the star is on the left side.",
    ],
)
def test_explained_accepts(text: str) -> None:
    assert in_style("explained", text)


@pytest.mark.parametrize("text", ["red", "red. Yes.", "B", "[0.1, 0.2, 0.5, 0.6]", ""])
def test_explained_rejects(text: str) -> None:
    assert not in_style("explained", text)


def test_detect_style_names_the_style_that_took_over() -> None:
    assert detect_style("C") == "letter"
    assert detect_style("No") == "yesno"
    assert detect_style("[0.1, 0.2, 0.5, 0.6]") == "box"
    assert detect_style("blue") == "short"
    assert detect_style("blue. It is the colour of the sky.") == "explained"
    assert detect_style("") is None


def test_question_style_instruction_line_wins_over_task(tmp_path: Path) -> None:
    mcq = "What colour?\nA. red\nB. blue\nAnswer with the option's letter from the given choices directly."
    assert question_style("TextVQA", mcq) == "letter"
    assert (
        question_style("TextVQA", "What is written?\nAnswer the question using a single word or phrase.")
        == "short"
    )
    assert question_style("VQAv2", "Is it red?\nCandidate answer: red\nAnswer with Yes or No.") == "yesno"
    grounding = "Please provide the bounding box coordinate of the region this sentence describes: the dog."
    assert question_style("Grounding", grounding) == "box"
    brief = "the dog\nGive the bounding box of the region, then describe the region in one short sentence."
    assert question_style("Grounding", brief) == "explained"
    assert question_style("ScienceQA", "Which is a solid?") == "letter"  # task default (CoIN style)
    assert question_style("SomethingNew", "Which?") == "short"
    root = declare(tmp_path / "root", {"name": "SomethingNew", "style": "yesno", "scorer": "VizWiz"})
    assert question_style("SomethingNew", "Which?", root) == "yesno"  # the root's tasks.json says so
    assert question_style("somethingnew", "Which?", root) == "yesno"
    assert question_style("SomethingNew", "Which?") == "short"  # without the root nothing is known


def test_task_style_comes_from_the_task_facts(tmp_path: Path) -> None:
    assert task_style("ScienceQA") == "letter" and task_style("grounding") == "box"
    assert task_style("OCRVQA") == "short" and task_style("Nope") is None
    bad = declare(tmp_path / "bad", {"name": "X", "style": "poem", "scorer": "VizWiz"})
    with pytest.raises(RootTaskError, match=r"tasks\[0\] \(X\): field 'style'"):
        task_style("X", bad)


def test_format_error_rate_counts_and_examples() -> None:
    q = "What colour is the circle?\nAnswer the question using a single word or phrase."
    res = format_errors("Colours", [q] * 4, ["red", "B", "A", "blue"])
    assert res.errors == 2 and res.total == 4 and res.rate == 50.0
    assert res.answered_as == {"letter": 2}
    assert res.expected == {"short": 4}
    assert res.examples[0] == {"expected": "short", "answer": "B"}
    with pytest.raises(ValueError, match="3 questions but 2 answers"):
        format_errors("T", [q] * 3, ["a", "b"])


def test_format_errors_of_a_prediction_file(tmp_path: Path) -> None:
    path = tmp_path / "ScienceQA.jsonl"
    q = "Which?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly."
    lines = [{"question_id": i, "prompt": q, "text": t} for i, t in enumerate(["A", "B", "x is right", "C"])]
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    res = format_errors_of_predictions("ScienceQA", path)
    assert (res.errors, res.total) == (1, 4)
