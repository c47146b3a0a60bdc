"""What a Micro-CoIN test gives without looking at the picture: the majority class and the best constant.

Why: a cell's accuracy means learning only above what one repeated answer scores. The majority baseline is
the share of the test's most frequent gold answer; the best constant is the best accuracy any one answer from
the task's pool reaches under the task's own CoIN scorer (it catches scorer quirks: under ImageNet's
substring rule the letter `A` was right for four of five shapes). Both are computed from the built data,
never written in.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict


class Baseline(BaseModel):
    """One task's baselines (percent) and the answers that reach them."""

    model_config = ConfigDict(extra="forbid")

    majority: float
    majority_answer: str
    best_constant: float
    best_constant_answer: str
    items: int


def _gold(rec: dict[str, object]) -> str:
    return str(rec.get("answer", rec.get("answer_bbox", "")))


def task_baseline(root: Path, task: str) -> Baseline:
    """Majority and best-constant accuracy of `task`'s test split under `root` (tasks registered)."""
    from sefe.coin.layout import task_dir
    from sefe.evaluation.scorers import find_gt, score_predictions

    folder = task_dir(Path(root), task)
    test = folder / "test.json"
    records = orjson.loads(test.read_bytes())
    counts = Counter(_gold(r) for r in records)
    top, n_top = counts.most_common(1)[0]
    pool = orjson.loads((folder / "distractors.json").read_bytes())["answers"]
    gt = find_gt(Path(root), task, "fixed", allow_approximate=True)
    best, best_answer = -1.0, ""
    with tempfile.TemporaryDirectory(prefix="sefe-baseline-") as tmp:
        preds = Path(tmp) / "constant.jsonl"
        for answer in sorted(set(pool) | set(counts)):
            lines = [
                orjson.dumps({"question_id": r["question_id"], "prompt": r["text"], "text": answer})
                for r in records
            ]
            preds.write_bytes(b"\n".join(lines) + b"\n")
            result = score_predictions(task, preds, test, gt=gt, mode="fixed", data_root=Path(root))
            acc = float(result.accuracy)
            if acc > best:
                best, best_answer = acc, answer
    return Baseline(
        majority=round(100.0 * n_top / len(records), 2),
        majority_answer=top,
        best_constant=round(best, 2),
        best_constant_answer=best_answer,
        items=len(records),
    )


def baselines(root: Path, tasks: list[str]) -> dict[str, Baseline]:
    return {t: task_baseline(root, t) for t in tasks}
