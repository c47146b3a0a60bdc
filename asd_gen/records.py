"""LLaVA train records and CoIN test records: pydantic models, fast orjson load, atomic save.

Files reach hundreds of MB (GQA, OCRVQA), so a file is parsed once with orjson and validated with one
`TypeAdapter` call; per-record Python work happens only on the error path, to name the index, id and field.
Unknown keys are kept (``extra="allow"``) and ids keep their JSON type, so unconverted records round-trip.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from sefe.atomic import atomic_write_bytes

IMAGE_TOKEN = "<image>"


class RecordsError(ValueError):
    """A malformed file or record; the message names the file, record index and id, and the field."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        message: str,
        *,
        index: int | None = None,
        record_id: object = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path)
        self.index = index
        self.record_id = record_id
        self.field = field
        where = [self.path]
        if index is not None:
            where.append(f"record {index}")
        if record_id is not None:
            where.append(f"id {record_id!r}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}")


# A turn is a TypedDict, not a model: pydantic validates it in Rust without building 2+ million Python objects
# for a GQA-sized file (about 4x faster than a BaseModel per turn). Extra keys are kept.
Turn = TypedDict("Turn", {"from": Literal["human", "gpt"], "value": StrictStr})
Turn.__pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[attr-defined]


class TrainRecord(BaseModel):
    """A LLaVA conversation record: alternating human/gpt turns starting with human."""

    model_config = ConfigDict(extra="allow")

    id: StrictStr | StrictInt
    image: StrictStr | None = None
    conversations: list[Turn] = Field(min_length=2)

    @field_validator("conversations")
    @classmethod
    def _alternating(cls, turns: list[Turn]) -> list[Turn]:
        for i, turn in enumerate(turns):
            want = "human" if i % 2 == 0 else "gpt"
            if turn["from"] != want:
                raise ValueError(f"turn {i} is from {turn['from']!r}, expected {want!r} (turns alternate)")
        if len(turns) % 2:
            raise ValueError("ends with a human turn that has no gpt answer")
        return turns

    def pairs(self) -> list[tuple[str, str]]:
        """(question, answer) per exchange, in order."""
        c = self.conversations
        return [(c[i]["value"], c[i + 1]["value"]) for i in range(0, len(c), 2)]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class TestRecord(BaseModel):
    """A flat CoIN evaluation record: `answer`, or `answer_bbox` + `size` for Grounding."""

    __test__ = False  # not a pytest test class
    model_config = ConfigDict(extra="allow")

    question_id: StrictStr | StrictInt
    image: StrictStr | None = None
    text: StrictStr
    answer: StrictStr | None = None
    answer_bbox: StrictStr | None = None
    size: list[float] | None = None

    @model_validator(mode="after")
    def _has_answer(self) -> TestRecord:
        if self.answer is None and self.answer_bbox is None:
            raise ValueError("needs `answer`, or `answer_bbox` with `size`")
        if self.answer_bbox is not None and (self.size is None or len(self.size) != 2):
            raise ValueError("`answer_bbox` needs `size` as [width, height]")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, mode="json")


_TRAIN = TypeAdapter(list[TrainRecord])
_TEST = TypeAdapter(list[TestRecord])


def _read_array(path: Path) -> list[Any]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RecordsError(path, f"cannot read: {e.strerror or e}") from e
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RecordsError(path, f"not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise RecordsError(path, f"expected a JSON array of records, got {type(data).__name__}")
    return data


# pydantic adds the union member (e.g. "str") to an error location: not a field name
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _error(path: Path, data: list[Any], err: ValidationError, id_key: str) -> RecordsError:
    first = err.errors()[0]
    loc = list(first["loc"])
    index = loc[0] if loc and isinstance(loc[0], int) else None
    rest = loc[1:] if index is not None else loc
    record = data[index] if index is not None and index < len(data) else None
    record_id = record.get(id_key) if isinstance(record, dict) else None
    field = ""
    for part in (p for p in rest if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p))):
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    msg = first["msg"]
    if first["type"] == "missing":
        msg = "required field is missing"
    elif not isinstance(record, dict):
        msg = f"record is not a JSON object ({type(record).__name__})"
    return RecordsError(path, msg, index=index, record_id=record_id, field=field or None)


def load_train(path: str | os.PathLike[str]) -> list[TrainRecord]:
    """Load a LLaVA train file (one JSON array); raises `RecordsError` on the first bad record."""
    p = Path(path)
    data = _read_array(p)
    try:
        return _TRAIN.validate_python(data)
    except ValidationError as e:
        raise _error(p, data, e, "id") from None


def load_test(path: str | os.PathLike[str]) -> list[TestRecord]:
    """Load a CoIN test file (one JSON array); raises `RecordsError` on the first bad record."""
    p = Path(path)
    data = _read_array(p)
    try:
        return _TEST.validate_python(data)
    except ValidationError as e:
        raise _error(p, data, e, "question_id") from None


def dump_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)


def save_train(path: str | os.PathLike[str], records: Iterable[TrainRecord | dict[str, Any]]) -> None:
    """Atomically write records as one JSON array (model records or plain dicts, in the given order)."""
    rows: Sequence[Any] = [r.to_json() if isinstance(r, TrainRecord) else r for r in records]
    atomic_write_bytes(path, dump_json(rows))
