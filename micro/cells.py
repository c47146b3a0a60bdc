"""Per-cell statistics of a run's answers, read from its prediction files (`<k>_<Task>/eval/<Task>.jsonl`).

Why: accuracy, format errors and the probe say how well; they do not say *what* the model answered. A cell
where one answer is repeated for every item scores that label's test share, which reads as learning unless the
share of the most frequent prediction is shown beside it (`top_share`, percent of items). With the data
root, the answers are also checked against the tasks' answer pools (`sefe.evaluation.pool_cells`, the cells a
run records after each stage): the out-of-pool rate and the share taken from each other task's pool.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from sefe.evaluation.pool_cells import later_from_pool, prediction_texts

__all__ = ["cell_matrix", "cell_stats", "later_from_pool", "line_accuracy", "stage_predictions", "top_share"]


def stage_predictions(run: Path, tasks: list[str], k: int, i: int) -> list[str] | None:
    """The answers to task i's test after stage k (0-based), or None when that cell was not evaluated."""
    from sefe.sefe_train.run_layout import stage_dir

    return prediction_texts(stage_dir(Path(run), k + 1, tasks[k]) / "eval" / f"{tasks[i]}.jsonl")


def normalise(answer: str) -> str:
    """Case, surrounding blanks and one final period do not make another answer."""
    return answer.strip().removesuffix(".").strip().casefold()


def top_share(answers: list[str]) -> float | None:
    """Percent of answers equal (normalised) to the most frequent one."""
    if not answers:
        return None
    _, n = Counter(normalise(a) for a in answers).most_common(1)[0]
    return round(100.0 * n / len(answers), 2)


def cell_matrix(run: Path, tasks: list[str]) -> list[list[float | None]]:
    """Lower-triangular matrix of the most frequent answer's share (rows: after stage k; columns: i <= k)."""
    return cell_stats(run, tasks)["top_share"]


def line_accuracy(run: Path, tasks: list[str], root: Path, k: int, i: int) -> dict[str, float] | None:
    """Percent right on the items asked with the trained instruction line and on the held-out paraphrases
    (test records' `instruction`), judged by normalised exact match (boxes: IoU >= 0.5): the CoIN scorers
    give one number per cell, this splits it (an approximation of the scorer, the same for every arm)."""
    from sefe.coin.layout import evaluation_file
    from sefe.evaluation.answer_pools import normalise
    from sefe.evaluation.scorers import box_iou, parse_box_fixed
    from sefe.sefe_train.run_layout import stage_dir

    path = stage_dir(Path(run), k + 1, tasks[k]) / "eval" / f"{tasks[i]}.jsonl"
    test = evaluation_file(Path(root), tasks[i])
    if not path.is_file() or not test.is_file():
        return None
    said = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            p = orjson.loads(line)
            said[str(p["question_id"])] = str(p.get("text", ""))
    hits: dict[str, list[int]] = {"trained": [], "held-out": []}
    for rec in orjson.loads(test.read_bytes()):
        answer = said.get(str(rec["question_id"]))
        if answer is None:
            continue
        if rec.get("answer_bbox"):
            box, gold = parse_box_fixed(answer), parse_box_fixed(str(rec["answer_bbox"]))
            right = box is not None and gold is not None and box_iou(box, gold) >= 0.5
        else:
            right = normalise(answer) == normalise(str(rec.get("answer", "")))
        hits[str(rec.get("instruction", "trained"))].append(int(right))
    return {kind: 100.0 * sum(h) / len(h) for kind, h in hits.items() if h}


def cell_stats(run: Path, tasks: list[str], root: Path | None = None) -> dict[str, Any]:
    """Per cell: `top_share`; with the data `root`, also `out_of_pool` (percent of answers in none of the
    task's own pool) and `from_pool` ("k,i" -> {task j: percent of answers from j's pool, not i's}): as the
    run recorded them after each stage where it did (same tasks), else computed by the same `pool_cell`."""
    from sefe.evaluation.pool_cells import pool_cell, read_pool_cells, recorded_cell, task_pools

    pools = task_pools(root, tasks) if root is not None else {}
    oop_rec, from_rec = read_pool_cells(run) if root is not None else (None, None)
    if oop_rec is None or from_rec is None or oop_rec.tasks != tasks or from_rec.tasks != tasks:
        oop_rec = from_rec = None
    top: list[list[float | None]] = []
    oop: list[list[float | None]] = []
    taken: dict[str, dict[str, float]] = {}
    lines: dict[str, list[list[float | None]]] = {"trained": [], "held-out": []}
    for k in range(len(tasks)):
        top_row: list[float | None] = []
        oop_row: list[float | None] = []
        line_rows: dict[str, list[float | None]] = {"trained": [], "held-out": []}
        for i in range(k + 1):
            split = line_accuracy(run, tasks, root, k, i) if root is not None else None
            for kind, row in line_rows.items():
                row.append(None if split is None else split.get(kind))
            answers = stage_predictions(run, tasks, k, i)
            top_row.append(None if answers is None else top_share(answers))
            cell = None if answers is None else recorded_cell(oop_rec, from_rec, k, i)
            if cell is None and answers is not None:
                cell = pool_cell(answers, tasks[i], pools)
            oop_row.append(None if cell is None else cell.out_of_pool)
            if cell is not None and cell.from_pool is not None:
                taken[f"{k},{i}"] = cell.from_pool
        if all(v is None for v in top_row):
            break
        top.append(top_row)
        oop.append(oop_row)
        for kind, row in line_rows.items():
            lines[kind].append(row)
    return {
        "top_share": top,
        "out_of_pool": oop,
        "from_pool": taken,
        "acc_trained": lines["trained"],
        "acc_held": lines["held-out"],
    }
