"""The five answer styles for one question, as pure functions: parts + content -> (question, answer).

Model-written content (distractors, explanations) is passed in; nothing here calls a model or makes text up.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sefe.asd_gen.styles.question import QuestionParts, join_question, option_lines
from sefe.asd_gen.styles.rng import randint_below, sample
from sefe.coin.instructions import (
    CANDIDATE_PREFIX,
    GROUNDING_INSTRUCTIONS,
    INSTRUCTIONS,
    NO,
    YES,
    Style,
)

QA = tuple[str, str]


def _keep_options(parts: QuestionParts) -> list[str]:
    """Original lettered options (ScienceQA) stay in the question in every style."""
    return option_lines(parts.options)


def render_yn(parts: QuestionParts, candidate: str, correct: bool, instruction: str) -> QA:
    """Yes/no: the question plus one candidate answer; `Yes` when the candidate is the correct answer."""
    body = [*_keep_options(parts), f"{CANDIDATE_PREFIX}{candidate}"]
    return join_question(parts, body, instruction, with_image=True), YES if correct else NO


def mcq_layout(correct: str, distractors: Sequence[str], rng: random.Random) -> tuple[list[str], int]:
    """Four options: the distractors in seeded order, the correct one at a uniformly seeded position."""
    others = sample(rng, list(distractors), len(distractors))
    pos = randint_below(rng, len(others) + 1)
    return [*others[:pos], correct, *others[pos:]], pos


def render_mcq(parts: QuestionParts, options: Sequence[str], correct_index: int, instruction: str) -> QA:
    """MCQ: options `A.`-`D.` on their own lines; the target is the letter."""
    text = join_question(parts, option_lines(options), instruction, with_image=True)
    return text, chr(ord("A") + correct_index)


def render_short(parts: QuestionParts, answer: str, instruction: str) -> QA:
    """Short answer: the answer text itself (without a trailing period)."""
    return join_question(parts, _keep_options(parts), instruction, with_image=True), short_answer(answer)


def short_answer(answer: str) -> str:
    a = answer.strip()
    return a[:-1].rstrip() if a.endswith(".") and not a.endswith("..") and len(a) > 1 else a


def explained_answer(answer: str, explanation: str) -> str:
    """The answer first (so rule-based scorers and readers still find it), then the explanation."""
    a, e = answer.strip(), " ".join(explanation.split())
    return f"{a} {e}" if a.endswith((".", "!", "?")) else f"{a}. {e}"


def render_explained(parts: QuestionParts, answer: str, explanation: str, instruction: str) -> QA:
    """Brief / detailed explanation (Grounding: region description): answer, then explanation."""
    return join_question(parts, _keep_options(parts), instruction, with_image=True), explained_answer(
        answer, explanation
    )


def instruction_for(style: Style, grounding: bool) -> str:
    return (GROUNDING_INSTRUCTIONS if grounding else INSTRUCTIONS)[style]
