"""Per-cell statistics of a run's answers, read from its prediction files (`<k>_<Task>/eval/<Task>.jsonl`).

Why: accuracy, format errors and the probe say how well; they do not say *what* the model answered. A cell
where one answer is repeated for every item scores that label's test share, which reads as learning unless the
share of the most frequent prediction is shown beside it (`top_share`, percent of items). With the data
root, the answers are also checked against the tasks' answer pools (`sefe.evaluation.answer_pools`): the
out-of-pool rate and the share taken from each other task's pool.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson


def stage_predictions(run: Path, tasks: list[str], k: int, i: int) -> list[str] | None:
    """The answers to task i's test after stage k (0-based), or None when that cell was not evaluated."""
    from sefe.sefe_train.run_layout import stage_dir

    path = stage_dir(Path(run), k + 1, tasks[k]) / "eval" / f"{tasks[i]}.jsonl"
    if not path.is_file():
        return None
    return [
        str(orjson.loads(line).get("text", "")) for line in path.read_bytes().splitlines() if line.strip()
    ]


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
    task's own pool) and `from_pool` ("k,i" -> {task j: percent of answers from j's pool, not i's})."""
    from sefe.evaluation.answer_pools import from_pools, out_of_pool_rate, read_pool

    pools = {t: p for t in tasks if root is not None and (p := read_pool(root, t)) is not None}
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
            pool = pools.get(tasks[i])
            oop_row.append(None if answers is None or pool is None else out_of_pool_rate(answers, pool))
            if answers is not None and tasks[i] in pools:
                taken[f"{k},{i}"] = from_pools(answers, tasks[i], pools)
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


def later_from_pool(taken: dict[str, dict[str, float]], tasks: list[str]) -> list[list[float | None]]:
    """Rows: task i asked; columns: task j's pool; value: the mean over later stages k > i of the percent of
    i's answers taken from j's pool (superficial forgetting by content: `triangle` for a colour)."""
    sums: dict[tuple[int, str], list[float]] = {}
    for key, cell in taken.items():
        k, i = (int(x) for x in key.split(","))
        if k > i:
            for tj, share in cell.items():
                sums.setdefault((i, tj), []).append(share)
    return [
        [round(sum(v) / len(v), 2) if (v := sums.get((i, tj))) else None for tj in tasks]
        for i in range(len(tasks))
    ]
