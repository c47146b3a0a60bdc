"""Reading prediction JSONL and the official ground-truth files, with errors that say where.

Test records come from the one loader in `sefe.coin.records` (wrapped here so scorers raise one error type).

Scorers must never silently change what they divide by, so everything here either returns exactly what the
file holds (with line numbers kept) or raises `ScoringError` naming the file, the line or record index, the id
and the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from sefe.coin.records import RecordsError, TestField, TestRecord, load_test
from sefe.errors import InputError


class ScoringError(InputError):
    """A prediction, test or ground-truth file that cannot be scored as it is."""


class Prediction(BaseModel):
    """One line of a CoIN prediction file (only the fields scoring reads are required)."""

    model_config = ConfigDict(extra="allow")

    question_id: str | int
    text: str
    line: int = 0  # 1-based line in the file, for error messages

    @property
    def qid(self) -> str:
        return str(self.question_id)


def _field_of(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(record)"
    return f"field '{loc}': {first['msg']}"


def load_predictions(path: Path) -> list[Prediction]:
    """Read a prediction JSONL file in order; blank lines are skipped, anything else must parse, and an
    empty file is an error (there is nothing to score or judge: most likely the wrong file)."""
    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"predictions file not found: {path}")
    out: list[Prediction] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ScoringError(f"{path} line {lineno}: broken JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ScoringError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
            try:
                out.append(Prediction.model_validate({**obj, "line": lineno}))
            except ValidationError as exc:
                qid = obj.get("question_id", "?")
                raise ScoringError(f"{path} line {lineno} (question_id {qid!r}): {_field_of(exc)}") from None
    if not out:
        raise ScoringError(f"{path}: no predictions (the file is empty)")
    return out


def _load_json(path: Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"{what} not found: {path}")
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ScoringError(f"{path}: broken JSON ({exc})") from None


def load_test_records(path: Path, require: Iterable[TestField] = ()) -> list[TestRecord]:
    """A CoIN `test.json` through the one records loader (`sefe.coin.records`), errors as `ScoringError`."""
    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"annotations file not found: {path}")
    try:
        return load_test(path, require=require)
    except RecordsError as exc:
        raise ScoringError(str(exc)) from None


def require_field(path: Path, rec: TestRecord, field: str) -> Any:
    """A test-record field a scorer needs, or an error naming file, index, id and field."""
    value = getattr(rec, field)
    if value is None:
        raise ScoringError(f"{path} record {rec.index} (question_id {rec.qid!r}): missing field '{field}'")
    return value


def load_scienceqa_gt(folder: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Official ScienceQA `problems.json` (pid -> problem) and the `test` list of `pid_splits.json`."""
    folder = Path(folder)
    if folder.is_file():  # accept the problems.json path itself
        folder = folder.parent
    problems_path, splits_path = folder / "problems.json", folder / "pid_splits.json"
    problems = _load_json(problems_path, "ScienceQA problems.json")
    splits = _load_json(splits_path, "ScienceQA pid_splits.json")
    if not isinstance(problems, dict):
        raise ScoringError(f"{problems_path}: expected an object pid -> problem")
    if not isinstance(splits, dict) or not isinstance(splits.get("test"), list):
        raise ScoringError(f"{splits_path}: expected an object with a 'test' list of problem ids")
    for pid, prob in problems.items():
        if not isinstance(prob, dict) or not isinstance(prob.get("choices"), list):
            raise ScoringError(f"{problems_path} problem {pid!r}: field 'choices' must be a list")
        if not isinstance(prob.get("answer"), int):
            raise ScoringError(f"{problems_path} problem {pid!r}: field 'answer' must be an int index")
    return problems, [str(p) for p in splits["test"]]


def load_textvqa_gt(path: Path) -> dict[str, list[str]]:
    """Official `TextVQA_0.5.1_val.json`: str(question_id) -> the human answers."""
    data = _load_json(path, "TextVQA ground-truth file")
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ScoringError(f"{path}: expected an object with a 'data' list")
    out: dict[str, list[str]] = {}
    for i, item in enumerate(data["data"]):
        qid = item.get("question_id") if isinstance(item, dict) else None
        if qid is None:
            raise ScoringError(f"{path} data[{i}]: missing field 'question_id'")
        answers = item.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise ScoringError(
                f"{path} data[{i}] (question_id {qid!r}): field 'answers' must be a list of strings"
            )
        out[str(qid)] = answers
    return out


def load_gqa_gt(path: Path) -> dict[str, dict[str, Any]]:
    """Official GQA `testdev_balanced_questions.json`: qid -> {answer, isBalanced, ...}."""
    data = _load_json(path, "GQA ground-truth file")
    if not isinstance(data, dict):
        raise ScoringError(f"{path}: expected an object qid -> question")
    for qid, q in data.items():
        if not isinstance(q, dict) or not isinstance(q.get("answer"), str):
            raise ScoringError(f"{path} question {qid!r}: field 'answer' must be a string")
    return data
