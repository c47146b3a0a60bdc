"""The side files are what the project's scorers read: gold answers score full marks, wrong ones zero.

This ties the bundled test.json ids to the official-format ground truth (ScienceQA pids, TextVQA integer ids,
GQA balanced question ids) through the real `sefe eval score` code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sefe.data.make_coin_mini import TASKS
from sefe.evaluation.scorers import default_annotations, find_gt, score_predictions
from tests.helpers.coin_mini import load, test_records


def _write_predictions(path: Path, recs: list[dict[str, Any]], text_of: Any) -> Path:
    lines = []
    for i, r in enumerate(recs):
        pred = {"question_id": r["question_id"], "prompt": r["text"], "text": text_of(r)}
        pred |= {"answer_id": f"a{i}", "model_id": "oracle", "metadata": {}}
        lines.append(orjson.dumps(pred))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _textvqa_expected() -> float:
    """Soft VQA accuracy of answering each question with its test.json answer, from the ten human answers.

    The answers in coin-mini only vary by case, a trailing period and a leading '#', so this simple
    normalisation agrees with the EvalAI processor on them.
    """
    rows = {
        row["question_id"]: row["answers"] for row in load("eval_gt/TextVQA/TextVQA_0.5.1_val.json")["data"]
    }

    def norm(a: str) -> str:
        return a.lower().replace("#", " ").strip(" .")

    total = 0.0
    for r in test_records("TextVQA"):
        answers = [norm(a) for a in rows[r["question_id"]]]
        pred = norm(r["answer"])
        total += sum(min(1.0, (answers[:i] + answers[i + 1 :]).count(pred) / 3) for i in range(10)) / 10
    return 100 * total / len(test_records("TextVQA"))


@pytest.mark.parametrize("task", TASKS)
def test_gold_answers_score_full_marks_and_wrong_ones_zero(root: Path, tmp_path: Path, task: str) -> None:
    recs = test_records(task)
    gt = find_gt(root, task)
    assert (gt is not None) == (task in {"ScienceQA", "TextVQA", "GQA"})
    ann = default_annotations(root, task)
    gold = _write_predictions(tmp_path / "gold.jsonl", recs, lambda r: r.get("answer", r.get("answer_bbox")))
    for mode in ("compat", "fixed"):
        res = score_predictions(task, gold, ann, gt, mode)  # type: ignore[arg-type]
        assert res.total == len(recs) and res.missing == 0 and not res.unknown_ids
        expected = _textvqa_expected() if task == "TextVQA" else 100.0
        assert res.accuracy == pytest.approx(expected), (task, mode)
    wrong = "[0.00, 0.00, 0.01, 0.01]" if task == "Grounding" else "Zebra crossing"
    bad = _write_predictions(tmp_path / "bad.jsonl", recs, lambda r: wrong)
    assert score_predictions(task, bad, ann, gt, "compat").accuracy == 0.0
