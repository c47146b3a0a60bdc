"""Convert one whole record (every turn) to one target style.

`parse_record` reads what the styles need (question parts, the correct answer, a Grounding box), `need_for`
says what model content a conversion needs (a `Need`, or None when rules and data suffice), and
`convert_record` renders the new record from candidates and model results. All three are pure and seeded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sefe.asd_gen.candidates import (
    AnswerPool,
    BoxPool,
    ClassPool,
    answer_type,
    normalize_answer,
    wrong_options,
)
from sefe.asd_gen.needs import DistractorMode, Need, NeedKind, NeedResult, QAItem
from sefe.asd_gen.styles.boxes import Box, decimals_of, parse_box
from sefe.asd_gen.styles.question import QuestionError, QuestionParts, split_question
from sefe.asd_gen.styles.render import (
    instruction_for,
    mcq_layout,
    render_explained,
    render_mcq,
    render_short,
    render_yn,
)
from sefe.asd_gen.styles.rng import sample, seeded_rng
from sefe.coin.instructions import Style
from sefe.coin.records import TrainRecord
from sefe.coin.tasks import TaskSpec

MCQ_DISTRACTORS = 3
_ANSWER_IS = re.compile(r"The answer is ([A-Z])\.")
_LETTER = re.compile(r"^([A-Z])(?:[.)]\s.*)?$", re.DOTALL)


class ConversionError(ValueError):
    """A record that cannot be converted; it keeps its original style and the manifest says why."""


@dataclass(frozen=True)
class Item:
    parts: QuestionParts
    answer: str  # the correct answer text (ScienceQA: the option text; Grounding: the box string)
    box: Box | None = None
    decimals: int = 2
    correct_index: int | None = None  # ScienceQA: index of the correct option


@dataclass(frozen=True)
class ParsedRecord:
    index: int
    record: TrainRecord
    items: tuple[Item, ...]


@dataclass
class Sources:
    """Data-derived candidate sources of one task (built over all its records)."""

    classes: ClassPool | None = None
    boxes: BoxPool | None = None
    pool: AnswerPool | None = None


def _option_index(answer: str, options: Sequence[str]) -> int:
    a = answer.strip()
    m = _LETTER.match(a) or _ANSWER_IS.search(a)
    if m and ord(m.group(1)) - ord("A") < len(options):
        return ord(m.group(1)) - ord("A")
    norm = normalize_answer(a)
    for i, o in enumerate(options):
        if normalize_answer(o) == norm:
            return i
    raise ConversionError(f"answer {a!r} is neither an option letter nor an option text")


def parse_record(spec: TaskSpec, index: int, record: TrainRecord) -> ParsedRecord:
    """Read every turn of a record; a ConversionError names the turn that does not fit the task."""
    items: list[Item] = []
    for t, (q, a) in enumerate(record.pairs()):
        where = f"turn {t}"
        try:
            parts = split_question(
                q,
                context_prefixes=spec.context_prefixes,
                extra_instructions=spec.instruction_lines,
                parse_options=spec.answer == "option",
            )
        except QuestionError as e:
            raise ConversionError(f"{where}: {e}") from None
        if spec.answer == "option":
            if len(parts.options) < 2:
                raise ConversionError(f"{where}: no lettered options (A., B., ...) in the question")
            ci = _option_index(a, parts.options)
            items.append(Item(parts, parts.options[ci], correct_index=ci))
        elif spec.answer == "box":
            box = parse_box(a)
            if box is None:
                raise ConversionError(f"{where}: answer {a!r} is not a box [x1, y1, x2, y2]")
            items.append(Item(parts, a.strip().rstrip("."), box=box, decimals=decimals_of(a)))
        else:
            if not normalize_answer(a):
                raise ConversionError(f"{where}: empty answer")
            items.append(Item(parts, a.strip()))
    return ParsedRecord(index, record, tuple(items))


def _qa_item(item: Item) -> QAItem:
    p = item.parts
    before = [ln for ln in p.pre if not ln.startswith("Context:")]
    after = [ln for ln in p.post if not ln.startswith("Context:")]
    return QAItem(
        question="\n".join([*before, p.question, *after]),
        answer=item.answer,
        context=p.context,
        options=list(p.options) or None,
    )


def needs_model(spec: TaskSpec, style: Style, mode: DistractorMode) -> bool:
    return spec.production(style, mode) == "model"


def need_for(
    spec: TaskSpec, parsed: ParsedRecord, style: Style, mode: DistractorMode, yes: Sequence[bool]
) -> Need | None:
    """The model content this conversion needs; yes/no asks distractors only for the turns answered `No`."""
    if not needs_model(spec, style, mode):
        return None
    kind: NeedKind = style  # type: ignore[assignment]
    chosen = [it for it, y in zip(parsed.items, yes, strict=True) if not y] if style == "yn" else parsed.items
    if not chosen:
        return None
    return Need(
        task=spec.name,
        record_id=str(parsed.record.id),
        kind=kind,
        image=parsed.record.image,
        items=[_qa_item(it) for it in chosen],
    )


def _distractors(
    spec: TaskSpec,
    parsed: ParsedRecord,
    t: int,
    k: int,
    mode: DistractorMode,
    sources: Sources,
    model: list[str] | None,
    seed: int,
) -> tuple[list[str], str]:
    """k wrong candidates for turn t and the source they came from."""
    item = parsed.items[t]
    rng = seeded_rng(seed, spec.name, parsed.index, parsed.record.id, t, "distractors")
    if spec.candidates == "options" and item.correct_index is not None:
        got, src = sample(rng, wrong_options(item.parts.options, item.correct_index), k), "options"
    elif spec.candidates == "classes" and sources.classes is not None:
        got, src = sources.classes.draw(item.answer, k, rng), "classes"
    elif spec.candidates == "boxes" and sources.boxes is not None and item.box is not None:
        got, src = sources.boxes.draw(parsed.record.image, item.box, k, rng, item.decimals), "boxes"
    elif spec.candidates == "model" and mode == "pool" and sources.pool is not None:
        drawn = sources.pool.draw(item.parts.question, item.answer, k, rng)
        got, src = [_same_case(d, item.answer) for d in drawn], "pool"
    elif spec.candidates == "model" and mode == "model":
        got, src = _check_model(model, item.answer, k), "model"
    else:
        raise ValueError(f"no {spec.candidates}/{mode} candidate source was built for task {spec.name}")
    if src == "pool" and answer_type(item.answer) == "type:yesno":
        k = 1  # yes/no questions: MCQ offers just Yes and No (see AnswerPool.draw)
    if len(got) < k:
        raise ConversionError(f"turn {t}: only {len(got)} distinct wrong candidates from {src}, need {k}")
    return got, src


def _same_case(candidate: str, answer: str) -> str:
    """Pool answers come from other records: give them the answer's initial case so no option stands out."""
    if candidate[:1].islower() and answer[:1].isupper():
        return candidate[0].upper() + candidate[1:]
    if candidate[:1].isupper() and answer[:1].islower() and candidate[1:2].islower():
        return candidate[0].lower() + candidate[1:]
    return candidate


def _check_model(model: list[str] | None, correct: str, k: int) -> list[str]:
    if model is None:
        raise ConversionError("no model distractors for this turn")
    seen = {normalize_answer(correct)}
    out: list[str] = []
    for d in model:
        n = normalize_answer(d)
        if n and n not in seen:
            seen.add(n)
            out.append(d.strip())
    return out[:k]


def convert_record(
    spec: TaskSpec,
    parsed: ParsedRecord,
    style: Style,
    *,
    seed: int,
    yes: Sequence[bool] = (),
    mode: DistractorMode = "model",
    sources: Sources | None = None,
    result: NeedResult | None = None,
) -> tuple[TrainRecord, str | None]:
    """The record with every turn in `style`, and the distractor source used (None when none was needed).

    `yes[t]` decides the yes/no target of turn t; `result` is the engine's answer to `need_for(...)`.
    Raises ConversionError when candidates or model content are missing or unusable.
    """
    src = sources or Sources()
    grounding = spec.answer == "box"
    instruction = instruction_for(style, grounding)
    if style == spec.original_style:
        raise ConversionError(f"{style} is the original style of {spec.name}")
    model_iter = iter(result.distractors or []) if result and result.distractors is not None else None
    explanations = list(result.explanations or []) if result else []
    if style in ("brief", "detail") and len(explanations) != len(parsed.items):
        raise ConversionError(
            f"{style}: need {len(parsed.items)} model explanations, got {len(explanations)}"
        )
    new_values: list[tuple[str, str]] = []
    used: str | None = None
    for t, item in enumerate(parsed.items):
        if style == "yn":
            if yes[t]:
                q, a = render_yn(item.parts, item.answer, True, instruction)
            else:
                model = next(model_iter, None) if model_iter is not None else None
                (cand,), used = _distractors(spec, parsed, t, 1, mode, src, model, seed)
                q, a = render_yn(item.parts, cand, False, instruction)
        elif style == "mcq":
            model = next(model_iter, None) if model_iter is not None else None
            wrong, used = _distractors(spec, parsed, t, MCQ_DISTRACTORS, mode, src, model, seed)
            rng = seeded_rng(seed, spec.name, parsed.index, parsed.record.id, t, "mcq")
            options, pos = mcq_layout(item.answer, wrong, rng)
            q, a = render_mcq(item.parts, options, pos, instruction)
        elif style == "short":
            q, a = render_short(item.parts, item.answer, instruction)
        else:
            expl = explanations[t].strip()
            if not expl:
                raise ConversionError(f"turn {t}: empty model explanation")
            q, a = render_explained(item.parts, item.answer, expl, instruction)
        new_values.append((q, a))
    turns = []
    for t, (q, a) in enumerate(new_values):
        human, gpt = parsed.record.conversations[2 * t], parsed.record.conversations[2 * t + 1]
        turns += [{**human, "value": q}, {**gpt, "value": a}]
    if style in ("brief", "detail"):
        used = None
    return parsed.record.model_copy(update={"conversations": turns}), used
