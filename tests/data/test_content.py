"""coin-mini answers are true of the pictures: checked from the pixels, not from the generator's state."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from sefe.data.mini_coco import box_text, coco_box_to_padded
from sefe.data.mini_draw import COLOURS
from tests.helpers.coin_mini import human_turns, image, load, test_records, train


def _near(arr: np.ndarray, rgb: tuple[int, int, int], tol: int = 60) -> np.ndarray:
    return np.abs(arr.astype(np.int16) - np.array(rgb, dtype=np.int16)).sum(axis=-1) < tol


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        ((10, 20, 30, 40), (96, 64), "[0.10, 0.38, 0.42, 0.79]"),  # wide: y shifted by (96-64)/2 = 16
        ((10, 20, 30, 40), (64, 96), "[0.27, 0.21, 0.58, 0.62]"),  # tall: x shifted by 16
        ((0, 0, 80, 80), (80, 80), "[0.00, 0.00, 1.00, 1.00]"),
    ],
)
def test_box_normalisation_follows_the_spec(box: tuple, size: tuple[int, int], expected: str) -> None:
    assert box_text(coco_box_to_padded(box, *size)) == expected


def _padded(rel: str) -> np.ndarray:
    img = image(rel)
    side = max(img.size)
    canvas = Image.new("RGB", (side, side), (255, 0, 255))  # a colour no scene uses
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return np.asarray(canvas)


def test_grounding_boxes_frame_the_described_object() -> None:
    recs = [(r["image"], r["conversations"][1]["value"], human_turns(r)[0]) for r in train("Grounding")]
    recs += [(r["image"], r["answer_bbox"], r["text"]) for r in test_records("Grounding")]
    for rel, box, question in recs:
        arr = _padded(rel)
        side = arr.shape[0]
        x1, y1, x2, y2 = (round(float(v) * side) for v in box.strip("[]").split(","))
        colour_name = next((c for c in COLOURS if f" {c} " in question), None)
        centre = arr[(y1 + y2) // 2, (x1 + x2) // 2]
        target = COLOURS[colour_name] if colour_name else tuple(int(c) for c in centre)
        inside = _near(arr[y1:y2, x1:x2], target)
        assert inside.mean() > 0.3, f"{rel}: box {box} does not hold the {colour_name or 'target'} object"
        # three pixels outside each edge the object has ended (boxes are rounded to 1/100 of the side)
        strips = [arr[max(y1 - 3, 0), x1:x2], arr[min(y2 + 2, side - 1), x1:x2],
                  arr[y1:y2, max(x1 - 3, 0)], arr[y1:y2, min(x2 + 2, side - 1)]]  # fmt: skip
        for strip in strips:
            assert _near(strip, target).mean() < 0.15, f"{rel}: box {box} is not tight"


def test_colour_answers_are_visible() -> None:
    cases = [
        (r["image"], r["text"].split("\n")[0], r["answer"])
        for r in test_records("VQAv2") + test_records("GQA")
    ]
    for r in train("VQAv2") + train("GQA"):
        turns = r["conversations"]
        cases += [
            (r["image"], turns[k]["value"], turns[k + 1]["value"].lower()) for k in range(0, len(turns), 2)
        ]
    checked = 0
    for rel, question, answer in cases:
        if re.search(r"What colou?r is the \w+\?", question):
            assert _near(np.asarray(image(rel)), COLOURS[answer], 40).sum() >= 30, f"{rel}: no {answer} in it"
            checked += 1
    assert checked >= 10


def test_magnet_and_thermometer_answers_follow_from_the_pixels() -> None:
    problems = load("eval_gt/ScienceQA/problems.json")
    checked = 0
    for r in train("ScienceQA") + test_records("ScienceQA"):
        pid = str(r.get("id", r.get("question_id")))
        p = problems[pid]
        if "image" not in r:
            continue
        arr = np.asarray(image(r["image"]))
        correct = p["choices"][p["answer"]]
        if p["category"] == "Magnets":
            # facing poles: right half of the left magnet (x 24..43), left half of the right one (x 52..71)
            facing = [("N" if _near(arr[32, x0 : x0 + 4], COLOURS["red"]).all() else "S") for x0 in (38, 53)]
            assert correct == ("repel" if facing[0] == facing[1] else "attract"), pid
            checked += 1
        elif p["category"] == "Heat and thermal energy":
            heights = [int(_near(arr[:, x + 4], COLOURS["red"]).sum()) for x in (12, 42, 72)]
            assert p["answer"] == heights.index(max(heights)), pid
            checked += 1
    assert checked >= 8


def test_unanswerable_vizwiz_pictures_are_the_unreadable_ones() -> None:
    recs = [(r["image"], r["conversations"][1]["value"]) for r in train("VizWiz")]
    recs += [(r["image"], r["answer"]) for r in test_records("VizWiz")]
    dark = {rel: float(np.asarray(image(rel)).mean()) for rel, _ in recs}
    bad = [dark[rel] for rel, a in recs if a.lower() == "unanswerable"]
    good = [dark[rel] for rel, a in recs if a.lower() != "unanswerable"]
    assert bad and good and max(bad) < min(good)


def test_textvqa_answers_are_among_the_ocr_tokens() -> None:
    for r in test_records("TextVQA"):
        tokens = r["text"].split("\n")[1].removeprefix("Reference OCR token: ").split(", ")
        assert r["answer"].lower().strip(".#") in {t.lower() for t in tokens}, r["question_id"]
