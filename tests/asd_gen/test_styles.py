"""Every target style of every CoIN task renders from records in the task's own format."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sefe.asd_gen.build import _sources
from sefe.asd_gen.candidates import normalize_answer
from sefe.asd_gen.needs import NeedResult
from sefe.asd_gen.styles.boxes import iou, parse_box
from sefe.asd_gen.styles.convert import ConversionError, convert_record, need_for, parse_record
from sefe.asd_gen.styles.question import is_instruction_line
from sefe.asd_gen.styles.render import explained_answer, mcq_layout
from sefe.asd_gen.styles.rng import seeded_rng
from sefe.coin.instructions import CANDIDATE_PREFIX, GROUNDING_INSTRUCTIONS, INSTRUCTIONS
from sefe.coin.records import TrainRecord
from sefe.coin.tasks import coin_tasks, get_task
from tests.helpers.asd_factory import task_records

TASKS = [t.name for t in coin_tasks()]


def _model_result(need, style: str) -> NeedResult:  # type: ignore[no-untyped-def]
    """What a model would return for this Need: built here so the pure renderers can be checked."""
    if style == "mcq":
        return NeedResult(
            distractors=[[f"wrong {k} of {i}" for k in range(3)] for i in range(len(need.items))]
        )
    if style == "yn":
        return NeedResult(distractors=[[f"wrong of {i}"] for i in range(len(need.items))])
    return NeedResult(explanations=[f"Because reason {i} holds." for i in range(len(need.items))])


def _render(task: str, style: str, mode: str, idx: int = 1, yes: bool = False):  # type: ignore[no-untyped-def]
    spec = get_task(task)
    raw = task_records(task, 12)
    records = [TrainRecord.model_validate(r) for r in raw]
    parsed = parse_record(spec, idx, records[idx])
    flags = [yes] * len(parsed.items)
    need = need_for(spec, parsed, style, mode, flags)  # type: ignore[arg-type]
    result = _model_result(need, style) if need else None
    rec, src = convert_record(
        spec,
        parsed,
        style,
        seed=3,
        yes=flags,
        mode=mode,
        sources=_sources(spec, records, mode),  # type: ignore[arg-type]
        result=result,
    )
    return spec, records[idx], parsed, rec, src, need


@pytest.mark.parametrize("mode", ["model", "pool"])
@pytest.mark.parametrize("task", TASKS)
def test_every_style_of_every_task(task: str, mode: str) -> None:
    spec = get_task(task)
    for style in spec.target_styles:
        for idx, yes in ((1, False), (2, True), (3, False)):
            _, orig, parsed, rec, src, need = _render(task, style, mode, idx, yes)
            instr = (GROUNDING_INSTRUCTIONS if spec.answer == "box" else INSTRUCTIONS)[style]
            assert rec.id == orig.id and rec.image == orig.image and rec.model_extra == orig.model_extra
            assert len(rec.conversations) == len(orig.conversations)
            for t, (q, a) in enumerate(rec.pairs()):
                lines = q.split("\n")
                assert lines[-1] == instr and sum(is_instruction_line(ln) for ln in lines) == 1
                assert q.count("<image>") == orig.conversations[2 * t]["value"].count("<image>")
                item = parsed.items[t]
                if style == "yn":
                    cand = next(ln for ln in lines if ln.startswith(CANDIDATE_PREFIX))[
                        len(CANDIDATE_PREFIX) :
                    ]
                    assert a == ("Yes" if yes else "No")
                    assert (normalize_answer(cand) == normalize_answer(item.answer)) == yes
                elif style == "mcq":
                    opts = [ln[3:] for ln in lines if len(ln) > 2 and ln[1:3] == ". " and ln[0] in "ABCD"]
                    n_opts = 2 if mode == "pool" and normalize_answer(item.answer) in ("yes", "no") else 4
                    assert len(opts) == n_opts and len({normalize_answer(o) for o in opts}) == n_opts
                    assert a in "ABCD" and opts["ABCD".index(a)] == item.answer
                elif style == "short":
                    assert a == item.answer
                else:
                    assert a.startswith(item.answer) and "reason" in a
                if spec.answer == "box" and style in ("yn", "mcq"):
                    for ln in lines:
                        box = parse_box(ln.removeprefix(CANDIDATE_PREFIX)[3 if style == "mcq" else 0 :])
                        if box and box != item.box:
                            assert iou(box, item.box) < 0.5  # type: ignore[arg-type]
            if style in ("brief", "detail"):
                assert need is not None and need.kind == style and src is None
            elif style in ("yn", "mcq") and not (style == "yn" and yes):
                expected = {"options": "options", "classes": "classes", "boxes": "boxes"}.get(
                    spec.candidates, mode
                )
                assert src == expected
                assert (need is not None) == (expected == "model")


def test_yes_turns_need_no_model() -> None:
    *_, src, need = _render("GQA", "yn", "model", 2, yes=True)
    assert need is None and src is None


def test_needs_carry_scienceqa_context_options_and_grounding_box() -> None:
    *_, need = _render("ScienceQA", "brief", "model", 1)
    item = need.items[0]
    assert item.context == "Two magnets are placed as shown." and item.options and item.answer in item.options
    assert "A." not in item.question and "Answer" not in item.question
    *_, need = _render("Grounding", "detail", "model", 1)
    assert parse_box(need.items[0].answer) is not None and "bounding box" in need.items[0].question
    *_, need = _render("TextVQA", "mcq", "model", 1)
    assert need.items[0].question == "what is written on the sign?\nReference OCR token: SIGN1, ii"


def test_model_output_that_repeats_the_answer_is_rejected() -> None:
    spec = get_task("GQA")
    rec = TrainRecord.model_validate(task_records("GQA", 2)[0])
    parsed = parse_record(spec, 0, rec)
    bad = NeedResult(distractors=[["Red", "RED.", "blue"], ["yes", "no", "maybe"]])
    with pytest.raises(ConversionError, match="distinct wrong"):
        convert_record(spec, parsed, "mcq", seed=0, result=bad)
    with pytest.raises(ConversionError, match="explanations"):
        convert_record(spec, parsed, "brief", seed=0, result=NeedResult(explanations=["only one"]))


@given(n=st.integers(0, 3), seed=st.integers(0, 2**32))
def test_mcq_layout_keeps_every_option_once(n: int, seed: int) -> None:
    wrong = [f"w{i}" for i in range(n)]
    opts, pos = mcq_layout("right", wrong, seeded_rng(seed))
    assert opts[pos] == "right" and sorted(opts) == sorted(["right", *wrong])


def test_mcq_position_is_uniform() -> None:
    counts = Counter(mcq_layout("r", ["a", "b", "c"], seeded_rng(0, i))[1] for i in range(4000))
    assert set(counts) == {0, 1, 2, 3} and all(900 < c < 1100 for c in counts.values())


def test_explained_answer_puts_answer_first() -> None:
    assert explained_answer("Red", "  The bus\nis red. ") == "Red. The bus is red."
    assert explained_answer("Yes.", "It is.") == "Yes. It is."


def test_pool_candidates_take_the_answers_initial_case() -> None:
    from sefe.asd_gen.styles.convert import _same_case

    assert _same_case("blue", "Red") == "Blue" and _same_case("Blue", "red") == "blue"
    assert _same_case("USA", "france") == "USA"  # acronyms are left alone
