"""CoIN records: LLaVA train records and flat test records, with ONE loader each and one set of rules.

Files reach hundreds of MB (GQA, OCRVQA), so a file is parsed once with orjson and validated with one
`TypeAdapter` call; per-record Python work happens only on the error path, to name the index, id and field.
Unknown keys are kept (``extra="allow"``) and ids keep their JSON type, so unconverted records round-trip.

Test records: the model checks what every consumer needs (a `question_id` that is a string or an integer;
string `text` / `image` / `answer` / `answer_bbox` when present; `size` as `[w, h]`, required with
`answer_bbox`). On top of that a consumer names the fields it needs with `load_test(path, require=...)`, and a
record without one fails with an error naming the file, record index, id and field:

| consumer                                  | needs                                   |
|-------------------------------------------|-----------------------------------------|
| inference (`sefe eval run`, `sefe train`) | `text` (`image` when the record has one) |
| scoring with the official ground truth    | nothing more (ScienceQA, TextVQA, GQA)   |
| scoring from `test.json` alone            | `answer`; Grounding `answer_bbox` + `size` |
| the judge                                 | `text` and the answer field              |

So a file that `sefe eval score` accepts is one `sefe eval run` accepts too, whenever it has the `text`
inference needs.
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
    PrivateAttr,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from sefe.atomic import atomic_write_bytes
from sefe.errors import InputError

IMAGE_TOKEN = "<image>"


class RecordsError(InputError):
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
    text: StrictStr | None = None
    answer: StrictStr | None = None
    answer_bbox: StrictStr | None = None
    size: list[float] | None = None
    _index: int = PrivateAttr(default=-1)

    @model_validator(mode="after")
    def _box_has_size(self) -> TestRecord:
        if self.size is not None and len(self.size) != 2:
            raise ValueError("`size` must be [width, height]")
        if self.answer_bbox is not None and self.size is None:
            raise ValueError("`answer_bbox` needs `size` as [width, height]")
        return self

    @property
    def qid(self) -> str:
        """The id as scorers join on it (`str(question_id)`)."""
        return str(self.question_id)

    @property
    def index(self) -> int:
        """0-based position in the file it was loaded from (-1 when built in memory)."""
        return self._index

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, mode="json")


TestField = Literal["text", "image", "answer", "answer_bbox", "size"]


def answer_fields(answer_kind: str) -> tuple[TestField, ...]:
    """The test-record fields holding the ground truth of a task whose answers are `answer_kind`."""
    return ("answer_bbox", "size") if answer_kind == "box" else ("answer",)


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


def load_test(path: str | os.PathLike[str], require: Iterable[TestField] = ()) -> list[TestRecord]:
    """Load a CoIN test file (one JSON array); `require`: fields the caller needs in every record.

    Raises `RecordsError` (file, record index, id, field) on the first bad record.
    """
    p = Path(path)
    data = _read_array(p)
    try:
        records = _TEST.validate_python(data)
    except ValidationError as e:
        raise _error(p, data, e, "question_id") from None
    need = tuple(require)
    for i, rec in enumerate(records):
        rec._index = i
        for name in need:
            if getattr(rec, name) is None:
                raise RecordsError(
                    p, "required field is missing", index=i, record_id=rec.question_id, field=name
                )
    return records


def dump_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2)


def save_train(path: str | os.PathLike[str], records: Iterable[TrainRecord | dict[str, Any]]) -> None:
    """Atomically write records as one JSON array (model records or plain dicts, in the given order)."""
    rows: Sequence[Any] = [r.to_json() if isinstance(r, TrainRecord) else r for r in records]
    atomic_write_bytes(path, dump_json(rows))
