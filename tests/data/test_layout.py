"""coin-mini has the layout and formats of the spec (`coin-data.md`): all eight tasks, LLaVA train records,
flat test records, each dataset's own image layout, and the official-format ground-truth side files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from sefe.coin.records import load_test, load_train
from sefe.data import coin_mini_root
from sefe.data.make_coin_mini import MANAGED
from tests.helpers.coin_mini import TASKS, human_turns, image, load, test_records, train

SHORT = "Answer the question using a single word or phrase."
MCQ = "Answer with the option's letter from the given choices directly."
GROUNDING = "Please provide the bounding box coordinate of the region this sentence describes:"
IMAGE_LAYOUT = {
    "ScienceQA": r"ScienceQA/images/(train|test)/\d+/image\.png",
    "TextVQA": r"TextVQA/train_images/[0-9a-f]{16}\.jpg",
    "ImageNet": r"ImageNet/(train/(n\d{8})/\2_\d+|val/ILSVRC2012_val_\d{8})\.JPEG",
    "GQA": r"GQA/images/n?\d+\.jpg",
    "VizWiz": r"VizWiz/(train|val)/VizWiz_\1_\d{8}\.jpg",
    "Grounding": r"COCO/train2014/COCO_train2014_\d{12}\.jpg",
    "VQAv2": r"COCO/(?P<s>train|val)2014/COCO_(?P=s)2014_\d{12}\.jpg",
    "OCRVQA": r"OCRVQA/images/\d{9}[\dX]\.jpg",
}
MULTI_TURN = {"GQA", "VQAv2", "OCRVQA"}
BOX = re.compile(r"^\[(\d\.\d\d), (\d\.\d\d), (\d\.\d\d), (\d\.\d\d)\]$")


def test_helper_points_at_the_bundled_root(root: Path) -> None:
    assert coin_mini_root() == root
    assert root.name == "coin-mini" and root.parent.name == "data"
    assert sorted(p.name for p in (root / "annotations").iterdir()) == sorted(TASKS)
    readme = (root / "README.md").read_text()
    assert "Synthetic" in readme and "python -m sefe.data.make_coin_mini" in readme
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) < 3_000_000


def test_helper_names_the_fix_when_the_data_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sefe.data

    monkeypatch.setattr(sefe.data.resources, "files", lambda _pkg: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"coin-mini.*python -m sefe.data.make_coin_mini"):
        coin_mini_root()


@pytest.mark.parametrize("task", TASKS)
def test_records_load_with_the_project_models(root: Path, task: str) -> None:
    assert 24 <= len(load_train(root / "annotations" / task / "train.json")) <= 40
    assert 10 <= len(load_test(root / "annotations" / task / "test.json")) <= 16
    assert sorted(p.name for p in (root / "annotations" / task).iterdir()) == ["test.json", "train.json"]


@pytest.mark.parametrize("task", TASKS)
def test_train_records_are_llava_conversations(root: Path, task: str) -> None:
    recs = train(task)
    assert len({r["id"] for r in recs}) == len(recs), "ids must be unique"
    for i, rec in enumerate(recs):
        where = f"{task} train[{i}] id={rec['id']}"
        turns = rec["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2), where
        questions = human_turns(rec)
        if "image" in rec:
            assert re.fullmatch(IMAGE_LAYOUT[task], rec["image"]), where
            assert questions[0].startswith("<image>\n"), where
        assert all("<image>" not in q for q in questions[1:]), where
        assert all(t["value"] and t["value"] == t["value"].strip() for t in turns), where
        last_lines = {q.rsplit("\n", 1)[-1] for q in questions}
        expected = {"ScienceQA": {MCQ}, "Grounding": None}.get(task, {SHORT})
        if expected is None:
            assert all(
                q.removeprefix("<image>\n").startswith(GROUNDING) and "\n" not in q[8:] for q in questions
            )
        else:
            assert last_lines == expected, where
    if task in MULTI_TURN:
        assert max(len(r["conversations"]) for r in recs) >= 6, f"{task} needs multi-turn records"
    else:
        assert all(len(r["conversations"]) == 2 for r in recs)


@pytest.mark.parametrize("task", TASKS)
def test_test_records_are_flat_and_point_at_real_images(root: Path, task: str) -> None:
    recs = test_records(task)
    assert len({str(r["question_id"]) for r in recs}) == len(recs)
    for i, rec in enumerate(recs):
        where = f"{task} test[{i}] question_id={rec['question_id']}"
        answer_keys = {"answer_bbox", "size"} if task == "Grounding" else {"answer"}
        assert set(rec) - {"image"} == {"question_id", "text"} | answer_keys, where
        assert "<image>" not in rec["text"], where
        if task != "ScienceQA":
            assert "image" in rec, where
        if "image" in rec:
            assert re.fullmatch(IMAGE_LAYOUT[task], rec["image"]), where
            assert (root / rec["image"]).is_file(), where


def test_every_image_is_used_and_every_referenced_image_exists(root: Path) -> None:
    referenced: set[str] = set()
    for task in TASKS:
        referenced |= {r["image"] for r in train(task) + test_records(task) if "image" in r}
    on_disk = {
        p.relative_to(root).as_posix()
        for top in MANAGED
        if top not in ("annotations", "eval_gt")
        for p in (root / top).rglob("*")
        if p.is_file()
    }
    assert referenced == on_disk
    for rel in sorted(on_disk):
        w, h = image(rel).size
        assert min(w, h) >= 64 and max(w, h) <= 96, rel


def test_real_data_quirks_are_present() -> None:
    sqa_train, sqa_test = train("ScienceQA"), test_records("ScienceQA")
    assert any("image" not in r for r in sqa_train) and any("image" not in r for r in sqa_test), (
        "text-only items"
    )
    assert any("\nContext: " in human_turns(r)[0] for r in sqa_train if "image" in r)
    assert any(not human_turns(r)[0].startswith("<image>") for r in sqa_train)
    id_types = {type(r["id"]) for t in TASKS for r in train(t)} | {
        type(r["question_id"]) for t in TASKS for r in test_records(t)
    }
    assert id_types == {str, int}
    assert any(r["answer"] == "unanswerable" for r in test_records("VizWiz"))
    assert any(human_turns(r)[0].split("\n")[-2].startswith("When the provided") for r in train("VizWiz"))
    coco_train = {r["image"] for r in train("Grounding")}
    assert coco_train & {r["image"] for r in train("VQAv2")}, "Grounding and VQAv2 share COCO images"
    sizes = {tuple(r["size"]) for r in test_records("Grounding")}
    assert any(w != h for w, h in sizes), "some grounding images must be non-square"


def _options(text: str) -> list[str]:
    return [line[3:] for line in text.split("\n") if re.match(r"^[A-E]\. ", line)]


def test_scienceqa_side_files_match_the_records() -> None:
    problems: dict[str, dict[str, Any]] = load("eval_gt/ScienceQA/problems.json")
    splits: dict[str, list[str]] = load("eval_gt/ScienceQA/pid_splits.json")
    assert set(splits) == {"train", "val", "test", "minival", "minitest", "trainval"}
    assert set(splits["minitest"]) <= set(splits["test"]) and set(splits["minival"]) <= set(splits["val"])
    assert splits["trainval"] == splits["train"] + splits["val"]
    assert set(problems) == set(splits["train"]) | set(splits["val"]) | set(splits["test"])
    fields = {"question", "choices", "answer", "hint", "image", "task", "grade", "subject", "topic"}
    fields |= {"category", "skill", "lecture", "solution", "split"}
    for pid, p in problems.items():
        assert set(p) == fields, pid
        assert 0 <= p["answer"] < len(p["choices"]) <= 5 and p["image"] in (None, "image.png"), pid
        assert pid in splits[p["split"]]
    for split, recs in (("train", train("ScienceQA")), ("test", test_records("ScienceQA"))):
        assert [str(r.get("id", r.get("question_id"))) for r in recs] == splits[split]
        for r in recs:
            pid = str(r.get("id", r.get("question_id")))
            p = problems[pid]
            text = r["text"] if split == "test" else human_turns(r)[0]
            answer = r["answer"] if split == "test" else r["conversations"][1]["value"]
            assert _options(text) == p["choices"], pid
            assert answer == "ABCDE"[p["answer"]], pid
            assert p["question"] in text and (not p["hint"] or f"Context: {p['hint']}" in text), pid
            assert ("image" in r) == (p["image"] is not None), pid


def test_textvqa_side_file_has_ten_varied_answers_per_test_question(root: Path) -> None:
    gt = load("eval_gt/TextVQA/TextVQA_0.5.1_val.json")
    assert (gt["dataset_type"], gt["dataset_name"], gt["dataset_version"]) == ("val", "textvqa", "0.5.1")
    rows = {row["question_id"]: row for row in gt["data"]}
    recs = test_records("TextVQA")
    assert set(rows) == {r["question_id"] for r in recs} and all(isinstance(q, int) for q in rows)
    disagreement = 0
    for r in recs:
        row = rows[r["question_id"]]
        assert len(row["answers"]) == 10 and all(isinstance(a, str) and a for a in row["answers"])
        assert r["answer"] == max(set(row["answers"]), key=row["answers"].count)
        assert r["image"] == f"TextVQA/train_images/{row['image_id']}.jpg"
        assert image(r["image"]).size == (row["image_width"], row["image_height"])
        assert row["question"] == r["text"].split("\n")[0]
        assert r["text"].split("\n")[1].startswith("Reference OCR token: ")
        disagreement += len({a.lower().strip(" .#") for a in row["answers"]}) > 1
    assert disagreement >= len(recs) // 2, "human answers should disagree now and then"


def test_gqa_side_file_holds_every_test_question_as_balanced() -> None:
    gt: dict[str, dict[str, Any]] = load("eval_gt/GQA/testdev_balanced_questions.json")
    recs = test_records("GQA")
    assert {r["question_id"] for r in recs} < set(gt), (
        "the official file may hold more questions than test.json"
    )
    for r in recs:
        q = gt[r["question_id"]]
        assert q["isBalanced"] is True and q["answer"] == r["answer"] == r["answer"].lower()
        assert r["text"] == f"{q['question']}\n{SHORT}"
        assert r["image"] == f"GQA/images/{q['imageId']}.jpg"
        assert {"fullAnswer", "types", "semantic", "annotations", "semanticStr", "equivalent"} <= set(q)
        assert set(q["types"]) == {"structural", "semantic", "detailed"}
        assert all({"operation", "dependencies", "argument"} == set(op) for op in q["semantic"])


def test_grounding_records_use_the_spec_box_format() -> None:
    for r in test_records("Grounding"):
        m = BOX.match(r["answer_bbox"])
        assert m, r["answer_bbox"]
        x1, y1, x2, y2 = map(float, m.groups())
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        assert list(image(r["image"]).size) == r["size"]
        assert r["text"].startswith(GROUNDING) and r["text"].endswith(".")
    assert all(BOX.match(t["conversations"][1]["value"]) for t in train("Grounding"))
