"""Micro-CoIN generator: deterministic for a seed, CoIN layout, truthful answers, tasks in its root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from sefe.micro.generate import HARD_TASKS, LOCATE_BOXES, TASK_ORDER, TASKS, build_micro


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    a = _digest(build_micro(tmp_path / "a", seed=3, n_train=6, n_test=4, n_warm=5))
    b = _digest(build_micro(tmp_path / "b", seed=3, n_train=6, n_test=4, n_warm=5))
    c = _digest(build_micro(tmp_path / "c", seed=4, n_train=6, n_test=4, n_warm=5))
    assert a == b
    assert a != c and a.keys() == c.keys()


def test_layout_ground_truth_and_candidates(tmp_path: Path) -> None:
    root = build_micro(tmp_path / "m", seed=0, n_train=8, n_test=6, n_warm=4)
    decl = orjson.loads((root / "tasks.json").read_bytes())
    assert [t["name"] for t in decl["tasks"]] == list(TASK_ORDER)
    styles = {t["name"]: t["style"] for t in decl["tasks"]}
    assert set(styles.values()) == {"short", "yesno", "letter", "box"}
    scenes = orjson.loads((root / "scenes.json").read_bytes())
    for task in TASK_ORDER:
        train = orjson.loads((root / "annotations" / task / "train.json").read_bytes())
        test = orjson.loads((root / "annotations" / task / "test.json").read_bytes())
        assert len(train) == 8 and len(test) == 6
        assert train[0]["conversations"][0]["value"].startswith("<image>\n")
        for rec in test:
            assert (root / rec["image"]).is_file() and rec["image"] in scenes
            gold = rec.get("answer", rec.get("answer_bbox"))
            assert gold in rec["candidates"] and len(set(rec["candidates"])) == len(rec["candidates"])
        pool = orjson.loads((root / "annotations" / task / "distractors.json").read_bytes())
        assert len(pool["answers"]) >= 2
    # answers are true of their pictures; the one-object readouts show exactly one object
    for task in ("Colour", "Shape", "Side", "Locate"):
        for rec in orjson.loads((root / "annotations" / task / "test.json").read_bytes()):
            (obj,) = scenes[rec["image"]]["objects"]
            truth = {
                "Colour": obj["colour"],
                "Shape": obj["shape"],
                "Side": "Yes" if obj["cell"][1] == 0 else "No",
                "Locate": LOCATE_BOXES[3 * obj["cell"][0] + obj["cell"][1]],
            }[task]
            assert rec.get("answer", rec.get("answer_bbox")) == truth
    for rec in orjson.loads((root / "annotations" / "Count" / "test.json").read_bytes()):
        n = len(scenes[rec["image"]]["objects"])
        assert "A. one\nB. two\nC. three\nD. four" in rec["text"]  # fixed option order
        line = next(ln for ln in rec["text"].split("\n") if ln.startswith(rec["answer"] + ". "))
        assert line[3:] == ("zero", "one", "two", "three", "four")[n]
    problems = orjson.loads((root / "eval_gt" / "ScienceQA" / "problems.json").read_bytes())
    assert len(problems) == 6
    textvqa = orjson.loads((root / "eval_gt" / "TextVQA" / "TextVQA_0.5.1_val.json").read_bytes())
    assert all(len(d["answers"]) == 10 for d in textvqa["data"])


def test_root_declares_scorers_styles_and_asd_specs(tmp_path: Path) -> None:
    from sefe.coin.root_tasks import find_task, root_tasks
    from sefe.coin.tasks import TaskError, get_task
    from sefe.evaluation.format_checks import task_style
    from sefe.evaluation.scorers import canonical_task, score_predictions

    root = build_micro(tmp_path / "m", seed=0, n_train=4, n_test=5, n_warm=2)
    assert [t.name for t in root_tasks(root)] == list(TASK_ORDER)
    assert canonical_task("Count", root) == "ScienceQA" and canonical_task("Locate", root) == "Grounding"
    assert task_style("Side", root) == "yesno" and canonical_task("Shape", root) == "VQAv2"
    assert find_task("Locate", root).answer == "box"
    with pytest.raises(TaskError):  # nothing leaked into the process: another root does not know Locate
        get_task("Locate")
    test = root / "annotations" / "Word" / "test.json"
    recs = orjson.loads(test.read_bytes())
    preds = tmp_path / "p.jsonl"
    lines = [{"question_id": r["question_id"], "prompt": r["text"], "text": r["answer"]} for r in recs]
    lines[0]["text"] = "B"
    preds.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    gt = root / "eval_gt" / "TextVQA" / "TextVQA_0.5.1_val.json"
    res = score_predictions("Word", preds, test, gt=gt, mode="fixed")
    assert res.accuracy == 80.0


def test_test_splits_are_stratified_and_train_splits_are_not(tmp_path: Path) -> None:
    from collections import Counter

    root = build_micro(
        tmp_path / "m", seed=2, n_train=60, n_test=40, n_warm=2, tasks=[*TASK_ORDER, *HARD_TASKS]
    )
    for task in (*TASK_ORDER, *HARD_TASKS):
        test = orjson.loads((root / "annotations" / task / "test.json").read_bytes())
        counts = Counter(r.get("answer", r.get("answer_bbox")) for r in test)
        classes = TASKS[task].classes
        if classes is None:  # LocateAmong: jittered boxes, no classes to balance
            continue
        assert set(counts) == set(classes), task  # every answer occurs (40 items >= k classes)
        assert max(counts.values()) - min(counts.values()) <= 1, (task, counts)
    # the test order is shuffled: not one class after the other
    colours = [
        r["answer"] for r in orjson.loads((root / "annotations" / "Colour" / "test.json").read_bytes())
    ]
    assert colours[:6] != sorted(colours[:6]) or colours[6:12] != sorted(colours[6:12])
    train = orjson.loads((root / "annotations" / "Side" / "train.json").read_bytes())
    yes = sum(r["conversations"][1]["value"] == "Yes" for r in train)
    assert 0 < yes < 60


def test_baselines_majority_and_best_constant_under_the_tasks_own_scorer(tmp_path: Path) -> None:
    from sefe.micro.baselines import baselines

    root = build_micro(tmp_path / "m", seed=0, n_train=2, n_test=30, n_warm=2)
    base = baselines(root, list(TASK_ORDER))
    # stratified: the majority is ceil(n / k) / n
    assert base["Colour"].majority == 16.67 and base["Shape"].majority == 20.0
    assert base["Side"].majority == 50.0 and base["Count"].majority == 26.67
    assert base["Word"].majority == 13.33 and base["Locate"].majority == 13.33
    for task, b in base.items():
        assert b.items == 30
        # exact-match scorers: no constant beats the majority class (Shape is not scored by substring)
        assert b.best_constant == b.majority, (task, b)


def test_locate_boxes_have_one_token_length_with_the_micro_tokenizer() -> None:
    from sefe.micro.warmstart import micro_model_config
    from sefe.models.tiny import TinyLlavaConfig, build_tokenizer

    tok = build_tokenizer(micro_model_config())
    lengths = {len(tok(b, add_special_tokens=False).input_ids) for b in LOCATE_BOXES}
    assert len(LOCATE_BOXES) == 9 and len(set(LOCATE_BOXES)) == 9
    assert len(lengths) == 1  # the likelihood probe compares boxes without a length bias
    # the option is off by default: other tiny models keep their tokenizer and cache key
    assert TinyLlavaConfig().digest() == TinyLlavaConfig(split_digits=False).digest()
    assert TinyLlavaConfig(split_digits=True).digest() != TinyLlavaConfig().digest()


def test_half_of_every_test_asks_with_a_held_out_instruction_line(tmp_path: Path) -> None:
    from sefe.evaluation.format_checks import question_style
    from sefe.micro.generate import PARAPHRASES

    root = build_micro(tmp_path / "m", seed=0, n_train=20, n_test=10, n_warm=2)
    for task in TASK_ORDER:
        test = orjson.loads((root / "annotations" / task / "test.json").read_bytes())
        train = orjson.loads((root / "annotations" / task / "train.json").read_bytes())
        held = [r for r in test if r["instruction"] == "held-out"]
        assert len(held) == 5
        trained_lines = {r["conversations"][0]["value"].split("\n")[-1] for r in train}
        for r in held:
            assert any(r["text"].startswith(p) or r["text"].endswith(p) for p in PARAPHRASES.values())
            assert not any(line in r["text"] for line in trained_lines if len(line) > 20)
            # the format check falls back to the task's own style on a line it does not know
            assert question_style(task, r["text"], root) == TASKS[task].style
