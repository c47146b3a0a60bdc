"""Per-cell statistics of a run's answers, read from its prediction files (`<k>_<Task>/eval/<Task>.jsonl`).

Why: accuracy, format errors and the probe say how well; they do not say *what* the model answered. A cell
where one answer is repeated for every item scores that label's test share, which reads as learning unless the
share of the most frequent prediction is shown beside it (`top_share`, percent of items).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

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


def cell_matrix(run: Path, tasks: list[str], stat: str = "top_share") -> list[list[float | None]]:
    """Lower-triangular matrix of a per-cell statistic (rows: after stage k; columns: task i <= k)."""
    fn = {"top_share": top_share}[stat]
    rows: list[list[float | None]] = []
    for k in range(len(tasks)):
        row = []
        for i in range(k + 1):
            answers = stage_predictions(run, tasks, k, i)
            row.append(None if answers is None else fn(answers))
        if all(v is None for v in row):
            break
        rows.append(row)
    return rows
