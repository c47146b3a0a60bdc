from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sefe.asd_gen.styles.question import is_instruction_line, join_question, split_question
from sefe.coin.instructions import INSTRUCTIONS, STYLES

# Instruction lines as different datasets write them: none is special-cased by exact string in the code.
VARIANTS = [
    "Answer the question using a single word or phrase.",
    "Answer with a single word.",
    "answer briefly.",
    "Please answer yes or no.",
    "Respond with the option letter only.",
    "Reply in one word",
    "Choose the correct option from the choices above.",
    "Select the right answer's letter.",
    "Give a short answer of one word or phrase.",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
]
NOT_INSTRUCTIONS = [
    "What is the object in the image?",
    "Please provide the bounding box coordinate of the region this sentence describes: a dog.",
    "Answers on a postcard: which city is shown?",  # starts with 'Answers', not the verb
    "Is the answer on the sign red?",
    "Reference OCR token: ANSWER, WITH",
]

question_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(lambda s: s.strip() and not is_instruction_line(s) and "<image>" not in s)


@pytest.mark.parametrize("line", VARIANTS)
def test_variants_detected(line: str) -> None:
    assert is_instruction_line(line)


@pytest.mark.parametrize("line", NOT_INSTRUCTIONS)
def test_questions_not_detected(line: str) -> None:
    assert not is_instruction_line(line)


def test_task_declared_instruction() -> None:
    odd = "Mark the box, nothing else."
    assert not is_instruction_line(odd)
    parts = split_question(f"Where is the dog?\n{odd}", extra_instructions=[odd])
    assert parts.question == "Where is the dog?" and parts.instruction == (odd,)


@given(q=question_text, instr=st.sampled_from(VARIANTS), style=st.sampled_from(STYLES), image=st.booleans())
def test_instruction_replaced_never_duplicated(q: str, instr: str, style: str, image: bool) -> None:
    text = ("<image>\n" if image else "") + f"{q.strip()}\n{instr}"
    parts = split_question(text)
    assert parts.question == q.strip()
    out = join_question(parts, [], INSTRUCTIONS[style], with_image=True)  # type: ignore[index]
    lines = out.split("\n")
    assert lines[-1] == INSTRUCTIONS[style]  # type: ignore[index]
    assert instr not in lines[:-1] and sum(is_instruction_line(ln) for ln in lines) == 1
    assert out.startswith("<image>\n") == image and out.count("<image>") == int(image)


@given(q=question_text)
def test_single_line_question_is_kept_even_if_imperative(q: str) -> None:
    for text in (q, "Answer this: what is 2+2?"):
        assert split_question(text).question == text.strip()


def test_two_instruction_lines_both_removed() -> None:
    parts = split_question(
        "<image>\nWhat color is this?\nWhen the provided information is insufficient, respond with "
        "'Unanswerable'.\nAnswer the question using a single word or phrase."
    )
    assert parts.question == "What color is this?" and len(parts.instruction) == 2


def test_scienceqa_layout_context_options_and_image_end() -> None:
    text = (
        "Context: Look at the map.\nWhich state is farthest north?\nA. Ohio\nB. Maine\nC. Texas\n"
        "Answer with the option's letter from the given choices directly.\n<image>"
    )
    p = split_question(text, parse_options=True)
    assert p.pre == ("Context: Look at the map.",) and p.question == "Which state is farthest north?"
    assert p.options == ("Ohio", "Maine", "Texas") and p.context == "Look at the map." and p.image == "end"
    out = join_question(p, ["Candidate answer: Ohio"], "X?", with_image=True)
    assert (
        out
        == "Context: Look at the map.\nWhich state is farthest north?\nCandidate answer: Ohio\nX?\n<image>"
    )


def test_ocr_line_stays_after_question() -> None:
    p = split_question(
        "<image>\nwhat brand?\nReference OCR token: Nokia\nAnswer the question using a single word."
    )
    assert (p.question, p.post) == ("what brand?", ("Reference OCR token: Nokia",))
    assert (
        join_question(p, [], "Z.", with_image=True) == "<image>\nwhat brand?\nReference OCR token: Nokia\nZ."
    )


def test_options_not_parsed_unless_asked_and_must_start_at_a() -> None:
    assert split_question("Q?\nA. x\nB. y").options == ()
    assert split_question("Q?\nB. x\nC. y", parse_options=True).options == ()
