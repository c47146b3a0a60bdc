"""Model output -> validated `NeedResult`: lenient JSON extraction, then strict pydantic validation.

Models (and the official SEFE prompt examples) fence their JSON, copy the examples' `// Repeat for each ...`
comment lines, leave trailing commas and drop a comma between objects. Structure is repaired outside string
literals only, so text inside answers is never changed. What is then accepted is strict: `extra="forbid"`,
exact counts, distinct distractors, bounded explanations.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from sefe.asd_gen.needs import Need, NeedResult
from sefe.asd_gen.schemas import (
    N_DISTRACTORS,
    WORD_BOUNDS,
    ExplanationOutput,
    MCQOutput,
    OfficialGrounding,
    OfficialImageNet,
    OfficialListExplanation,
    OfficialListMCQ,
    OfficialListYN,
    OfficialSingleExplanation,
    OfficialSingleMCQ,
    OfficialSingleYN,
    OutputSpec,
    YNOutput,
    check_not_answer,
)


class OutputError(ValueError):
    """The model's text is not a valid answer for its Need (message says why; the engine may retry)."""


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_VALUE_START = '"{['


def _bracket_span(text: str) -> str | None:
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    return text[start : end + 1] if end > start else None


def _json_spans(text: str) -> list[str]:
    """Candidate JSON parts of a reply: inside the first code fence, then the whole reply's outer brackets
    (a fence-like run of backticks inside a string value must not hide the real JSON)."""
    spans: list[str] = []
    m = _FENCE.search(text)
    if m:
        spans.append(_bracket_span(m.group(1)) or "")
    whole = _bracket_span(text)
    if whole is not None and whole not in spans:
        spans.append(whole)
    spans = [sp for sp in spans if sp]
    if not spans:
        raise OutputError("no JSON object or array in the output")
    return spans


def repair_json(text: str) -> str:
    """Drop `//` and `/* */` comments, trailing commas, and insert a missing comma between adjacent values,
    outside strings only (the official prompt files' example JSON has `// Repeat for each ...` lines that
    models copy)."""
    out: list[str] = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
                _maybe_comma(text, i + 1, out)
            i += 1
            continue
        if c == "/" and text.startswith(("//", "/*"), i):
            i = _comment_end(text, i)
            continue
        if c == '"':
            in_str = True
            out.append(c)
        elif c == ",":
            j = _skip_blank(text, i + 1)
            if j < n and text[j] in "}]":
                i += 1  # trailing comma
                continue
            out.append(c)
        elif c in "}]":
            out.append(c)
            _maybe_comma(text, i + 1, out)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _comment_end(text: str, i: int) -> int:
    """Index just past the comment starting at `i` (a line comment keeps its newline)."""
    if text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    end = text.find("*/", i + 2)
    return len(text) if end < 0 else end + 2


def _skip_blank(text: str, j: int) -> int:
    """The next index at or after `j` that is neither whitespace nor inside a comment."""
    n = len(text)
    while j < n:
        if text[j].isspace():
            j += 1
        elif text.startswith(("//", "/*"), j):
            j = _comment_end(text, j)
        else:
            break
    return j


def _maybe_comma(text: str, j: int, out: list[str]) -> None:
    """After a closed value, a following value start (not `:`/`,`/closer) means a comma went missing."""
    j = _skip_blank(text, j)
    if j < len(text) and text[j] in _VALUE_START:
        out.append(",")


def parse_lenient(text: str) -> Any:
    """Parse model text as JSON, tolerating fences, prose around it, trailing and missing commas."""
    if not text or not text.strip():
        raise OutputError("empty output")
    try:
        return orjson.loads(text)  # the common case with structured outputs: nothing to repair
    except orjson.JSONDecodeError:
        pass
    error: orjson.JSONDecodeError | None = None
    for span in _json_spans(text):
        for candidate in (span, repair_json(span)):
            try:
                return orjson.loads(candidate)
            except orjson.JSONDecodeError as e:
                error = error or e
    raise OutputError(f"malformed JSON: {error}")


def _validate(model: type[BaseModel], data: Any, ctx: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data, context=ctx)
    except ValidationError as e:
        errs = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise OutputError(f"invalid {model.__name__}: {errs}") from None


def _items(data: Any, n: int) -> list[Any]:
    """Array answers may come bare or wrapped in {"items": [...]} (the schema wraps them)."""
    if isinstance(data, dict) and set(data) == {"items"}:
        data = data["items"]
    if isinstance(data, dict) and n == 1:
        data = [data]
    if not isinstance(data, list):
        raise OutputError(f"expected an array of {n} entries, got {type(data).__name__}")
    if len(data) != n:
        raise OutputError(f"expected {n} entries, got {len(data)}")
    return data


def _by_index(entries: list[Any], n: int, attr: str) -> list[Any]:
    """Order entries by their 1-based index field (as rendered), falling back to order when 0-based."""
    idx = sorted(getattr(e, attr) for e in entries)
    if idx == list(range(1, n + 1)):
        return sorted(entries, key=lambda e: getattr(e, attr))
    if idx == list(range(n)):
        return sorted(entries, key=lambda e: getattr(e, attr))
    raise OutputError(f"{attr} values {idx} do not cover 1..{n}")


def validate_output(need: Need, spec: OutputSpec, data: Any) -> NeedResult:
    """Check parsed JSON against the spec's shape and the Need's answers; return one entry per item."""
    n = len(need.items)
    ctx: dict[str, Any] = {
        "n_distractors": N_DISTRACTORS.get(spec.kind),
        "word_bounds": WORD_BOUNDS.get(spec.kind, (1, 10_000)),
    }
    kind = spec.kind
    distractors: list[list[str]] | None = None
    explanations: list[str] | None = None
    if spec.shape == "native":
        wrapped = {"items": _items(data, n)}
        if kind == "mcq":
            distractors = [it.distractors for it in _validate(MCQOutput, wrapped, ctx).items]
        elif kind == "yn":
            distractors = [[it.distractor] for it in _validate(YNOutput, wrapped, ctx).items]
        else:
            explanations = [it.explanation for it in _validate(ExplanationOutput, wrapped, ctx).items]
    elif spec.shape == "official_list":
        models: dict[str, type[BaseModel]] = {"mcq": OfficialListMCQ, "yn": OfficialListYN}
        model = models.get(kind, OfficialListExplanation)
        entries = _by_index([_validate(model, e, ctx) for e in _items(data, n)], n, "question_index")
        if kind == "mcq":
            distractors = [e.distractor_options for e in entries]
        elif kind == "yn":
            distractors = [[e.distractor_option] for e in entries]
        else:
            explanations = [e.explanation for e in entries]
    elif spec.shape == "official_single":
        if n != 1:
            raise OutputError(f"single-question prompt used for {n} questions")
        if kind == "mcq":
            distractors = [_validate(OfficialSingleMCQ, data, ctx).distractor_options]
        elif kind == "yn":
            distractors = [[_validate(OfficialSingleYN, data, ctx).distractor_option]]
        else:
            explanations = [_validate(OfficialSingleExplanation, data, ctx).explanation]
    elif spec.shape == "official_imagenet":
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        explanations = [_validate(OfficialImageNet, data, ctx).explanation] * n
    elif spec.shape == "official_grounding":
        entries = _by_index(
            [_validate(OfficialGrounding, e, ctx) for e in _items(data, n)], n, "target_index"
        )
        explanations = [e.description for e in entries]
    if distractors is not None:
        for item, ds in zip(need.items, distractors, strict=True):
            try:
                check_not_answer(ds, item.answer)
            except ValueError as e:
                raise OutputError(str(e)) from None
    return NeedResult(distractors=distractors, explanations=explanations)


def parse_and_validate(need: Need, spec: OutputSpec, text: str) -> NeedResult:
    return validate_output(need, spec, parse_lenient(text))
