"""Output shapes the model must produce: pydantic models for validation and strict JSON schemas for decoding.

Two families of shapes exist. `native` is ours: `{"items": [...]}` with exactly one entry per question, each
holding only what was asked (no echo of questions or answers, so fewer output tokens). The `official_*`
shapes are those the SEFE release's prompt files ask for, so their prompts can be used unchanged. Every
JSON schema is strict (`additionalProperties: false`, all properties required, `minItems == maxItems`) and
has an object at the root, because OpenAI's structured outputs reject a root array: array-shaped official
answers are wrapped in `{"items": [...]}` in the schema and the parser accepts both forms.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from sefe.asd_gen.needs import NeedKind

Shape = Literal["native", "official_list", "official_single", "official_imagenet", "official_grounding"]

N_DISTRACTORS: dict[str, int] = {"mcq": 3, "yn": 1}
# Word bounds for explanations: the prompts ask for ~20 (brief) and ~50 (detail) words; the bounds only
# reject output that is clearly not an explanation of that kind (empty, one word, or a runaway essay).
WORD_BOUNDS: dict[str, tuple[int, int]] = {"brief": (3, 60), "detail": (10, 150)}

_ARTICLES = re.compile(r"^(a|an|the)\s+")
_PUNCT = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Comparison form of a short answer: case, accents, punctuation, articles and spacing do not count."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = _PUNCT.sub(" ", t)
    t = _SPACES.sub(" ", t).strip()
    return _ARTICLES.sub("", t)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _ctx(info: ValidationInfo) -> dict[str, Any]:
    return info.context or {}


def _check_distractors(values: list[str], info: ValidationInfo) -> list[str]:
    """Distractors must be the right number, non-empty and pairwise distinct (normalised)."""
    ctx = _ctx(info)
    want = ctx.get("n_distractors")
    if want is not None and len(values) != want:
        raise ValueError(f"expected {want} distractor(s), got {len(values)}")
    seen: set[str] = set()
    for v in values:
        n = normalise(v)
        if not n:
            raise ValueError("empty distractor")
        if n in seen:
            raise ValueError(f"duplicate distractor {v!r}")
        seen.add(n)
    return values


def check_not_answer(distractors: list[str], answer: str) -> None:
    """The correct answer must not appear among its own distractors (normalised comparison)."""
    target = normalise(answer)
    for d in distractors:
        if normalise(d) == target:
            raise ValueError(f"distractor {d!r} equals the correct answer {answer!r}")


def _check_explanation(value: str, info: ValidationInfo) -> str:
    lo, hi = _ctx(info).get("word_bounds", (1, 10_000))
    n = len(value.split())
    if not lo <= n <= hi:
        raise ValueError(f"explanation has {n} words, expected {lo}..{hi}")
    return value


# ---- native shapes -------------------------------------------------------------------------------------
class MCQItem(_Strict):
    distractors: list[str]
    _v = field_validator("distractors")(_check_distractors)


class YNItem(_Strict):
    distractor: str

    @field_validator("distractor")
    @classmethod
    def _one(cls, v: str, info: ValidationInfo) -> str:
        return _check_distractors([v], info)[0]


class ExplanationItem(_Strict):
    explanation: str
    _v = field_validator("explanation")(_check_explanation)


class MCQOutput(_Strict):
    items: list[MCQItem]


class YNOutput(_Strict):
    items: list[YNItem]


class ExplanationOutput(_Strict):
    items: list[ExplanationItem]


# ---- official SEFE shapes ------------------------------------------------------------------------------
class OfficialListExplanation(_Strict):
    question_index: int
    question: str
    answer: str
    explanation: str
    _v = field_validator("explanation")(_check_explanation)


class OfficialListMCQ(_Strict):
    question_index: int
    question: str
    correct_answer: str
    distractor_options: list[str]
    _v = field_validator("distractor_options")(_check_distractors)


class OfficialListYN(_Strict):
    """The release's yes/no list entry: one wrong option, non-empty and not the entry's own answer."""

    question_index: int
    question: str
    correct_answer: str
    distractor_option: str

    @field_validator("distractor_option")
    @classmethod
    def _one(cls, v: str, info: ValidationInfo) -> str:
        return _check_distractors([v], info)[0]

    @model_validator(mode="after")
    def _not_the_answer(self) -> OfficialListYN:
        check_not_answer([self.distractor_option], self.correct_answer)
        return self


class OfficialSingleExplanation(_Strict):
    explanation: str
    _v = field_validator("explanation")(_check_explanation)


class OfficialSingleMCQ(_Strict):
    distractor_options: list[str]
    _v = field_validator("distractor_options")(_check_distractors)


class OfficialSingleYN(_Strict):
    distractor_option: str

    @field_validator("distractor_option")
    @classmethod
    def _one(cls, v: str, info: ValidationInfo) -> str:
        return _check_distractors([v], info)[0]


class OfficialImageNet(_Strict):
    gt_category: str
    explanation: str
    _v = field_validator("explanation")(_check_explanation)


class OfficialGrounding(_Strict):
    target_index: int
    description: str
    _v = field_validator("description")(_check_explanation)


# ---- JSON schemas --------------------------------------------------------------------------------------
def _s() -> dict[str, Any]:
    return {"type": "string"}


def _i() -> dict[str, Any]:
    return {"type": "integer"}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def _arr(item: dict[str, Any], n: int) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": n, "maxItems": n}


def _item_props(kind: NeedKind) -> dict[str, Any]:
    if kind == "mcq":
        return {"distractors": _arr(_s(), N_DISTRACTORS["mcq"])}
    if kind == "yn":
        return {"distractor": _s()}
    return {"explanation": _s()}


def _official_list_props(kind: NeedKind) -> dict[str, Any]:
    base = {"question_index": _i(), "question": _s()}
    if kind == "mcq":
        return {**base, "correct_answer": _s(), "distractor_options": _arr(_s(), N_DISTRACTORS["mcq"])}
    if kind == "yn":
        return {**base, "correct_answer": _s(), "distractor_option": _s()}
    return {**base, "answer": _s(), "explanation": _s()}


@dataclass(frozen=True)
class OutputSpec:
    """What one request must answer: the shape, the item count and the strict schema sent to the backend."""

    kind: NeedKind
    n: int
    shape: Shape
    name: str
    json_schema: dict[str, Any] = field(hash=False, compare=False)


def output_spec(kind: NeedKind, n: int, shape: Shape = "native") -> OutputSpec:
    """Build the strict schema for `n` questions of one kind in one shape."""
    if shape == "native":
        schema = _obj({"items": _arr(_obj(_item_props(kind)), n)})
    elif shape == "official_list":
        schema = _obj({"items": _arr(_obj(_official_list_props(kind)), n)})
    elif shape == "official_single":
        if kind == "mcq":
            schema = _obj({"distractor_options": _arr(_s(), N_DISTRACTORS["mcq"])})
        elif kind == "yn":
            schema = _obj({"distractor_option": _s()})
        else:
            schema = _obj({"explanation": _s()})
    elif shape == "official_imagenet":
        schema = _obj({"gt_category": _s(), "explanation": _s()})
    elif shape == "official_grounding":
        schema = _obj({"items": _arr(_obj({"target_index": _i(), "description": _s()}), n)})
    else:  # pragma: no cover - Literal guards this
        raise ValueError(f"unknown shape {shape!r}")
    return OutputSpec(kind=kind, n=n, shape=shape, name=f"sefe_{shape}_{kind}_{n}", json_schema=schema)
