"""A run's answer-pool cells: the out-of-pool matrix and the "answered from task j's pool" shares.

Why one module: `sefe train` records these cells after every stage (`<run>/out_of_pool.json`,
`<run>/from_pool.json`), `sefe report` shows them and Micro-CoIN's report reads them; all three go through
`pool_cell`, so a recorded cell and a recomputed one cannot differ. Cell (k, i) holds the answers to task i's
test after stage k (0-based): the percent of them in none of task i's pool, and per other task j the percent
in j's pool and not in i's (`answer_pools.py`). A task without a pool (a box task of a CoIN root) has neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sefe.atomic import atomic_write_bytes
from sefe.errors import InputError, one_line
from sefe.evaluation.answer_pools import from_pools, out_of_pool_rate, read_pool
from sefe.evaluation.metrics import AccuracyMatrix
from sefe.evaluation.result_files import FROM_POOL_FILE, OUT_OF_POOL_FILE
from sefe.evaluation.scorers import Mode


class PoolCell(NamedTuple):
    """One cell: out-of-pool percent and {task j: percent from j's pool}; both None without a pool."""

    out_of_pool: float | None
    from_pool: dict[str, float] | None


class FromPoolCells(BaseModel):
    """`<run>/from_pool.json`: "k,i" (0-based stage, task) -> {task j: percent of answers from j's pool}."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str]
    cells: dict[str, dict[str, float]] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> FromPoolCells:
        try:
            return cls.model_validate(orjson.loads(Path(path).read_bytes()))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise InputError(f"{path}: not a from-pool table: {one_line(exc)}") from None

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2))


def task_pools(root: Path, tasks: Sequence[str]) -> dict[str, frozenset[str]]:
    """The pools of the tasks that have one under `root`."""
    return {t: p for t in tasks if (p := read_pool(Path(root), t)) is not None}


def pool_cell(answers: Sequence[str], task: str, pools: dict[str, frozenset[str]]) -> PoolCell:
    """The cell of `answers` to `task`'s questions, against every task's pool."""
    pool = pools.get(task)
    if pool is None:
        return PoolCell(None, None)
    return PoolCell(out_of_pool_rate(answers, pool), from_pools(answers, task, pools))


def prediction_texts(path: Path) -> list[str] | None:
    """The answers (`text`) of a prediction JSONL file in order, or None when there is no such file."""
    if not Path(path).is_file():
        return None
    lines = Path(path).read_bytes().splitlines()
    return [str(orjson.loads(line).get("text", "")) for line in lines if line.strip()]


def _resized(path: Path, tasks: list[str], mode: Mode) -> tuple[AccuracyMatrix, FromPoolCells]:
    """The recorded pair widened to `tasks` (appended tasks keep the cells); fresh when it was another run."""
    matrix, shares = read_pool_cells(path)
    if matrix is None or matrix.tasks != tasks[: len(matrix.tasks)]:
        matrix = AccuracyMatrix(tasks=tasks, mode=mode)
    else:
        matrix = AccuracyMatrix(tasks=tasks, mode=matrix.mode, rows=matrix.rows, details=matrix.details)
    if shares is None or shares.tasks != tasks[: len(shares.tasks)]:
        shares = FromPoolCells(tasks=tasks)
    return matrix, FromPoolCells(tasks=tasks, cells=shares.cells)


def record_pool_cells(
    run: Path, tasks: list[str], k: int, answers: dict[str, list[str]], root: Path, mode: Mode
) -> None:
    """Write row k (0-based) of the run's two pool files for the tasks answered after stage k; a stage
    evaluated again rewrites its cells, as the other matrices do."""
    pools = task_pools(root, tasks)
    matrix, shares = _resized(Path(run), tasks, mode)
    for i, task in enumerate(tasks[: k + 1]):
        if task not in answers:
            continue
        cell = pool_cell(answers[task], task, pools)
        key = f"{k},{i}"
        if cell.out_of_pool is None or cell.from_pool is None:  # no pool (a box task), or no answers
            shares.cells.pop(key, None)
            continue
        matrix.set(k, i, cell.out_of_pool)
        shares.cells[key] = cell.from_pool
    matrix.save(Path(run) / OUT_OF_POOL_FILE)
    shares.save(Path(run) / FROM_POOL_FILE)


def read_pool_cells(run: Path) -> tuple[AccuracyMatrix | None, FromPoolCells | None]:
    """The run's recorded out-of-pool matrix and from-pool shares; None for each file it does not have (runs
    written before they were recorded)."""
    oop, taken = Path(run) / OUT_OF_POOL_FILE, Path(run) / FROM_POOL_FILE
    matrix = AccuracyMatrix.load(oop) if oop.is_file() else None
    return matrix, FromPoolCells.load(taken) if taken.is_file() else None


def recorded_cell(
    matrix: AccuracyMatrix | None, shares: FromPoolCells | None, k: int, i: int
) -> PoolCell | None:
    """Cell (k, i) as recorded, or None when it was not (the caller computes it from the predictions)."""
    if matrix is None or shares is None or (taken := shares.cells.get(f"{k},{i}")) is None:
        return None
    value = matrix.get(k, i)
    return None if value is None else PoolCell(value, taken)


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
