"""The scorers on the bundled coin-mini data root, whose side files use the official ground-truth formats."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.evaluation.normalize import normalize_answer
from sefe.evaluation.scorers import TASKS, default_annotations, find_gt, score_predictions

ROOT = Path(__file__).resolve().parents[2] / "data" / "coin-mini"


def _oracle(task: str, out: Path, spoil: bool = False) -> Path:
    recs = orjson.loads(default_annotations(ROOT, task).read_bytes())
    lines = []
    for n, r in enumerate(recs):
        text = r.get("answer") or r["answer_bbox"]
        if spoil and n % 2 == 0:  # a sentence instead of the short answer: superficial forgetting
            text = f"I believe it is something else entirely, not {text}"
        lines.append(
            orjson.dumps(
                {
                    "question_id": r["question_id"],
                    "prompt": r["text"],
                    "text": text,
                    "answer_id": str(n),
                    "model_id": "oracle",
                    "metadata": {},
                }
            )
        )
    out.write_bytes(b"\n".join(lines) + b"\n")
    return out


def _closed_form(c: int, n: int = 10) -> float:
    """Soft accuracy of an answer given by c of n humans: c see c-1 others, n-c see c (each capped at 3)."""
    return (c * min(1.0, (c - 1) / 3) + (n - c) * min(1.0, c / 3)) / n


def _expected(task: str, gt: Path | None) -> float:
    """100 for exact-match tasks; for TextVQA the human agreement caps what even the test answer scores."""
    if task != "TextVQA" or gt is None:
        return 100.0
    humans = {str(d["question_id"]): d["answers"] for d in orjson.loads(gt.read_bytes())["data"]}
    recs = orjson.loads(default_annotations(ROOT, task).read_bytes())
    per = []
    for r in recs:
        norm = [normalize_answer(a) for a in humans[str(r["question_id"])]]
        per.append(_closed_form(norm.count(normalize_answer(r["answer"])), len(norm)))
    return 100.0 * sum(per) / len(per)


@pytest.mark.parametrize("task", TASKS)
def test_oracle_scores_full_marks_with_official_gt(task: str, tmp_path: Path) -> None:
    preds = _oracle(task, tmp_path / f"{task}.jsonl")
    gt = find_gt(ROOT, task)
    assert (gt is not None) == (task in ("ScienceQA", "TextVQA", "GQA"))
    for mode in ("compat", "fixed"):
        res = score_predictions(task, preds, default_annotations(ROOT, task), gt=gt, mode=mode)
        assert res.accuracy == pytest.approx(_expected(task, gt)), (mode, res)
        assert res.missing == 0 and res.total > 0


def test_spoiled_answers_lose_marks(tmp_path: Path) -> None:
    for task in ("ScienceQA", "GQA", "VQAv2"):
        preds = _oracle(task, tmp_path / f"{task}.jsonl", spoil=True)
        res = score_predictions(task, preds, default_annotations(ROOT, task), gt=find_gt(ROOT, task))
        assert 0 < res.accuracy < 100
