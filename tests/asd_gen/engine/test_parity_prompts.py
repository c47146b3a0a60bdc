"""Official-prompt parity of ASD (issue 9, points 3 and 4; docs/PARITY.md rows A1, A2).

Grounding: the official prompt says the boxes in `<target_list>` are "normalized with the image width and
height as 1", and the image sent is the unpadded original, while CoIN's boxes are fractions of the image
padded to a square; the list carries the referring expression alone. ScienceQA: `<question>` carries the
record's context and options.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from PIL import Image

from sefe.asd_gen.needs import Need, QAItem
from sefe.asd_gen.prompt_templates import PromptError, PromptSet
from sefe.asd_gen.styles.boxes import referring_expression, unpad_box

SENTENCE = "Please provide the bounding box coordinate of the region this sentence describes: the left dog."


def _official(root: Path, name: str, user: str) -> None:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"<SYSTEM PROMPT>\nSys.\n\n<USER PROMPT>\n{user}\n")


def _padded(x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> str:
    """A CoIN box string from a pixel box, from the data spec (pad to a square, divide by the side)."""
    side = max(w, h)
    dx, dy = (side - w) / 2, (side - h) / 2
    return orjson.dumps([(x1 + dx) / side, (y1 + dy) / side, (x2 + dx) / side, (y2 + dy) / side]).decode()


@pytest.fixture
def wide(tmp_path: Path) -> Path:
    """A 200x100 image: padding adds 50 px above and below."""
    (tmp_path / "COCO").mkdir()
    Image.new("RGB", (200, 100), (10, 10, 10)).save(tmp_path / "COCO" / "wide.jpg")
    return tmp_path


def _grounding(answer: str, kind: str = "detail", image: str | None = "COCO/wide.jpg") -> Need:
    items = [QAItem(question=SENTENCE, answer=answer)]
    return Need(task="Grounding", record_id="g", kind=kind, image=image, items=items)  # type: ignore[arg-type]


def test_unpad_box_inverts_the_coin_padding() -> None:
    for w, h in ((200, 100), (100, 240), (64, 64)):
        box = orjson.loads(_padded(10, 20, 60, 50, w, h))
        assert unpad_box(box, w, h) == pytest.approx((10 / w, 20 / h, 60 / w, 50 / h))


def test_referring_expression_drops_the_instruction_sentence() -> None:
    assert referring_expression(SENTENCE) == "the left dog"
    assert referring_expression("man in red") == "man in red"
    assert referring_expression("Locate: the dog: the brown one.") == "the dog: the brown one"


def test_official_target_list_has_unpadded_boxes_and_the_expression(tmp_path: Path, wide: Path) -> None:
    _official(tmp_path / "prompts", "Grounding/detail.txt", "Targets:\n<target_list>")
    ps = PromptSet(tmp_path / "prompts")
    _, _, user = ps.render(_grounding(_padded(20, 10, 120, 90, 200, 100)), wide)
    entry = orjson.loads(user.split("\n", 1)[1])[0]
    assert entry["bbox"] == [0.1, 0.1, 0.6, 0.9]  # x / 200 and y / 100, not the padded [0.1, 0.3, 0.6, 0.7]
    assert entry["expression"] == "the left dog" and "Please provide" not in user
    with pytest.raises(PromptError, match="needs the record's image"):
        ps.render(_grounding("[0.1, 0.3, 0.6, 0.7]", image=None), wide)


def test_shipped_grounding_templates_show_the_same_box_and_expression(wide: Path) -> None:
    _, system, user = PromptSet().render(_grounding(_padded(20, 10, 120, 90, 200, 100), "brief"), wide)
    assert "[0.100, 0.100, 0.600, 0.900]" in user and "the left dog" in user
    assert "Please provide" not in user and "padding" not in system


def test_official_scienceqa_question_carries_context_and_options(tmp_path: Path) -> None:
    _official(tmp_path, "ScienceQA/brief_wo_image.txt", "Question: <question>\nAnswer: <answer>")
    item = QAItem(
        question="Will these magnets attract or repel each other?",
        answer="repel",
        context="Two magnets are placed as shown.",
        options=["attract", "repel"],
    )
    nd = Need(task="ScienceQA", record_id="s", kind="brief", items=[item])
    _, _, user = PromptSet(tmp_path).render(nd)
    assert user == (
        "Question: Context: Two magnets are placed as shown.\n"
        "Will these magnets attract or repel each other?\nA. attract\nB. repel\nAnswer: repel"
    )
