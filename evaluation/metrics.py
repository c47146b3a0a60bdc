"""The continual-learning accuracy matrix and the CoIN metrics computed from it (MFT, MFN, MAA, BWT).

A[k][i] (0-based here) is the accuracy on task i after training task k, i <= k, as a percentage. The runner
fills it cell by cell after each stage and saves it atomically, so metrics can be read from a partial run:
they use the stages whose row is complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sefe.atomic import atomic_write_bytes
from sefe.errors import InputError, MissingFile, one_line

BWT_VARIANTS: dict[str, str] = {
    "BWT": "mean over i < T of (A[T][i] - A[i][i])",
    "BWT_all": "CoIN paper: sum over i < T of (A[T][i] - A[i][i]) divided by T (all T tasks, last term 0)",
}


class ContinualMetrics(BaseModel):
    """Metrics over the first `stages` complete rows of the matrix (None where undefined)."""

    model_config = ConfigDict(extra="forbid")

    stages: int
    complete: bool  # every task of the run has been trained and evaluated
    MFT: float | None
    MFN: float | None
    MAA: float | None
    BWT: float | None
    BWT_all: float | None
    bwt_definitions: dict[str, str] = Field(default_factory=lambda: dict(BWT_VARIANTS))


class AccuracyMatrix(BaseModel):
    """Lower-triangular accuracy matrix (percent); `rows[k][i]` is None until that cell is evaluated."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[str]
    mode: Literal["compat", "fixed"] = "compat"
    rows: list[list[float | None]] = Field(default_factory=list)
    # optional per-cell score details ("k,i" -> ScoreResult as JSON), for reports
    details: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_shape(self) -> AccuracyMatrix:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"task names repeat: {self.tasks}")
        if len(self.rows) > len(self.tasks):
            raise ValueError(f"{len(self.rows)} rows for {len(self.tasks)} tasks")
        for k, row in enumerate(self.rows):
            if len(row) > k + 1:
                raise ValueError(f"row {k} has {len(row)} entries; a lower-triangular row k has at most k+1")
            for i, v in enumerate(row):
                if v is not None and not 0.0 <= v <= 100.0:
                    raise ValueError(f"rows[{k}][{i}] = {v} is not a percentage in [0, 100]")
        return self

    def set(self, k: int, i: int, acc: float, details: dict[str, Any] | None = None) -> None:
        """Store the accuracy on task i after training task k (0-based, i <= k)."""
        if not 0 <= i <= k < len(self.tasks):
            raise IndexError(f"cell ({k}, {i}) outside a lower-triangular matrix of {len(self.tasks)} tasks")
        if not 0.0 <= acc <= 100.0:
            raise ValueError(f"accuracy {acc} for ({k}, {i}) is not a percentage in [0, 100]")
        while len(self.rows) <= k:
            self.rows.append([])
        row = self.rows[k]
        while len(row) <= i:
            row.append(None)
        row[i] = float(acc)
        if details is not None:
            self.details[f"{k},{i}"] = details

    def record(self, k: int, i: int, result: BaseModel) -> None:
        """Store a scorer's `ScoreResult` (accuracy + details); its mode must be the matrix's mode."""
        data = result.model_dump(mode="json")
        if data.get("mode") != self.mode:
            raise ValueError(f"a {data.get('mode')!r} score cannot go into a {self.mode!r} accuracy matrix")
        self.set(k, i, float(data["accuracy"]), data)

    def get(self, k: int, i: int) -> float | None:
        if k < len(self.rows) and i < len(self.rows[k]):
            return self.rows[k][i]
        return None

    def complete_stages(self) -> int:
        """How many leading rows are fully filled (the stages metrics can use)."""
        n = 0
        for k, row in enumerate(self.rows):
            if len(row) != k + 1 or any(v is None for v in row):
                break
            n += 1
        return n

    def metrics(self) -> ContinualMetrics:
        return compute_metrics(self)

    def save(self, path: Path) -> None:
        atomic_write_bytes(Path(path), orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: Path) -> AccuracyMatrix:
        path = Path(path)
        if not path.is_file():
            raise MissingFile(f"accuracy matrix not found: {path}")
        try:
            return cls.model_validate(orjson.loads(path.read_bytes()))
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}: broken JSON ({exc})") from None
        except ValidationError as exc:
            raise InputError(f"{path}: not an accuracy matrix: {one_line(exc)}") from None


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _diag_and_last(m: AccuracyMatrix) -> tuple[int, list[float], list[float]]:
    t = m.complete_stages()
    rows: list[list[float]] = [[v for v in row if v is not None] for row in m.rows[:t]]
    diag = [rows[i][i] for i in range(t)]
    return t, diag, rows[-1] if rows else []


def mft(m: AccuracyMatrix) -> float | None:
    """Mean fine-tune accuracy: mean of A[i][i]."""
    return _mean(_diag_and_last(m)[1])


def mfn(m: AccuracyMatrix) -> float | None:
    """Mean final accuracy: mean of the last complete row."""
    return _mean(_diag_and_last(m)[2])


def maa(m: AccuracyMatrix) -> float | None:
    """Mean average accuracy: mean over stages k of the mean of row k."""
    t = m.complete_stages()
    return _mean([sum(v for v in row if v is not None) / len(row) for row in m.rows[:t]])


def bwt(m: AccuracyMatrix, variant: Literal["BWT", "BWT_all"] = "BWT") -> float | None:
    """Backward transfer (negative = forgetting); see `BWT_VARIANTS` for the two denominators."""
    t, diag, last = _diag_and_last(m)
    if t == 0:
        return None
    diffs = [last[i] - diag[i] for i in range(t - 1)]
    if variant == "BWT_all":
        return sum(diffs) / t
    return _mean(diffs)


def compute_metrics(m: AccuracyMatrix) -> ContinualMetrics:
    t = m.complete_stages()
    return ContinualMetrics(
        stages=t,
        complete=t == len(m.tasks),
        MFT=mft(m),
        MFN=mfn(m),
        MAA=maa(m),
        BWT=bwt(m, "BWT"),
        BWT_all=bwt(m, "BWT_all"),
    )
