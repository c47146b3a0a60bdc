"""Format errors (superficial forgetting): is an answer in the answer style its question asks for?

Accuracy alone cannot tell "the model forgot" from "the model answers in another task's style" (a letter
where a colour was asked, a box where a phrase was asked). A format error is an answer that no rule-based
scorer of its task could accept because of its *form*, whatever its content. One checker per answer style:

- `letter`: one option letter, optionally bracketed or with a period: `B`, `(B)`, `B.`
- `yesno`: `Yes` or `No`, any case, optional final period
- `short`: one line of 1..`SHORT_MAX_WORDS` words, one sentence at most, with a letter or digit in it; not a
  lone option letter (`B`, `(B)`, `B)`), not a box nor a fragment of one (`[0.3`, `[0.69, 0.`: any bracket),
  not lone punctuation; a bare `Yes` / `No` only where the task's answers include one (VQAv2's do, a colour
  task's do not: `answer_pools.answers_include_yes_no`)
- `box`: four numbers in square brackets, optional final period: `[0.1, 0.2, 0.5, 0.6]`
- `explained`: an answer (phrase, letter or box) first, then at least `EXPLANATION_MIN_WORDS` more words

The style of a question is read from its instruction line (the last line, as CoIN's tools treat it) when it
is a known one, else from the task's `style` (its `TaskSpec` in `sefe.coin`: CoIN's eight, YAML tasks and a
data root's `tasks.json`). The result per task is the share of answers with a format error (percent).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sefe.coin.instructions import (
    EXPLAINED_MARKERS,
    GROUNDING_MARKER,
    MCQ_MARKER,
    SHORT_ANSWER_MARKER,
    YES_NO_MARKER,
)
from sefe.coin.root_tasks import find_task
from sefe.coin.tasks import ANSWER_STYLES, AnswerStyle, TaskError
from sefe.evaluation.answer_pools import answers_include_yes_no

FormatStyle = AnswerStyle  # the task facts name the styles; this module checks them
FORMAT_STYLES: tuple[FormatStyle, ...] = ANSWER_STYLES
SHORT_MAX_WORDS = 10  # OCRVQA book titles reach about ten words; CoIN short answers are shorter
EXPLANATION_MIN_WORDS = 3

_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_BOX = re.compile(rf"^\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]\.?$")
_BOX_HEAD = re.compile(rf"^\[\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\]")
_LETTER = re.compile(r"^\(?([A-Z])\)?\.?$")
_OPTION_LETTER = re.compile(r"^\(?[A-Z][).:]?$")  # an option letter in any of its usual wrappings
_BRACKETS = re.compile(r"[\[\]]")
_ALNUM = re.compile(r"[^\W_]")
_YESNO = re.compile(r"^(yes|no)[.!]?$", re.IGNORECASE)
_SENTENCE_BREAK = re.compile(r"[.!?;:](?:\s+|$)|\n")
_ANSWER_BREAK = re.compile(r"[.!?;:,](?:\s+|$)|\n")  # where an answer ends and its explanation begins

# Instruction-line markers (`sefe.coin.instructions`) -> style, matched case-insensitively as substrings of
# the question's last line. Order matters: the explanation lines of Grounding mention the bounding box too.
_INSTRUCTION_STYLES: tuple[tuple[str, FormatStyle], ...] = (
    *((marker, "explained") for marker in EXPLAINED_MARKERS),
    (MCQ_MARKER, "letter"),
    (YES_NO_MARKER, "yesno"),
    (SHORT_ANSWER_MARKER, "short"),
    (GROUNDING_MARKER, "box"),
)


def task_style(task: str, root: Path | str | None = None) -> FormatStyle | None:
    """The answer style of a task (any case; a data root's own tasks first), or None for an unknown task."""
    try:
        return find_task(task, root).style
    except TaskError:
        return None


def style_from_instruction(question: str) -> FormatStyle | None:
    """The style the question's last line asks for, if it is a known instruction line."""
    lines = [ln.strip() for ln in question.strip().split("\n") if ln.strip()]
    if not lines:
        return None
    last = lines[-1].lower()
    for needle, style in _INSTRUCTION_STYLES:
        if needle in last:
            return style
    return None


def question_style(task: str, question: str, root: Path | str | None = None) -> FormatStyle:
    """Instruction line first (it is what the model was asked), then the task's style, else `short`."""
    return style_from_instruction(question) or task_style(task, root) or "short"


# ---- the checkers ---------------------------------------------------------------------------------------


def is_letter(text: str) -> bool:
    return _LETTER.match(text.strip()) is not None


def is_yesno(text: str) -> bool:
    return _YESNO.match(text.strip()) is not None


def is_box(text: str) -> bool:
    return _BOX.match(text.strip()) is not None


def _words(text: str) -> list[str]:
    return text.split()


def is_short(text: str, max_words: int = SHORT_MAX_WORDS, yes_no: bool = True) -> bool:
    """A short phrase; `yes_no=False` for a task whose answers include no bare Yes / No."""
    t = text.strip()
    if not t or "\n" in t or _BRACKETS.search(t) or _OPTION_LETTER.match(t) or not _ALNUM.search(t):
        return False
    if not yes_no and is_yesno(t):
        return False
    if not 1 <= len(_words(t)) <= max_words:
        return False
    # one sentence at most: a break followed by more text means an answer plus an explanation
    body = t.rstrip(".!?")
    return _SENTENCE_BREAK.search(body) is None


def _explained_head(text: str) -> tuple[str, str] | None:
    """Split `answer<break>explanation`; a leading box is the answer (Grounding descriptions)."""
    t = text.strip()
    m = _BOX_HEAD.match(t)
    if m:
        return t[: m.end()], t[m.end() :].lstrip(" .,:;-\n")
    m = _ANSWER_BREAK.search(t)
    if not m:
        return None
    return t[: m.start()].strip(), t[m.end() :].strip()


def is_explained(text: str, max_head_words: int = SHORT_MAX_WORDS) -> bool:
    parts = _explained_head(text)
    if parts is None:
        return False
    head, tail = parts
    if not head or not 1 <= len(_words(head)) <= max_head_words:
        return False
    return len(_words(tail)) >= EXPLANATION_MIN_WORDS


CHECKERS: dict[FormatStyle, Callable[[str], bool]] = {
    "letter": is_letter,
    "yesno": is_yesno,
    "short": is_short,
    "box": is_box,
    "explained": is_explained,
}


def in_style(style: FormatStyle, text: str) -> bool:
    """True when `text` has the form `style` asks for."""
    return CHECKERS[style](text)


def detect_style(text: str) -> FormatStyle | None:
    """The style an answer is in (most specific first), or None: says *which* style took over."""
    order: tuple[FormatStyle, ...] = ("letter", "yesno", "box", "short", "explained")
    for style in order:
        if CHECKERS[style](text):
            return style
    return None


# ---- per task -------------------------------------------------------------------------------------------


class FormatResult(BaseModel):
    """Format errors of one task's predictions: `rate` is the percentage of answers not in their style."""

    model_config = ConfigDict(extra="forbid")

    task: str
    rate: float
    errors: int
    total: int
    expected: dict[str, int] = Field(default_factory=dict)  # required style -> questions
    answered_as: dict[str, int] = Field(default_factory=dict)  # style of the wrong-format answers
    examples: list[dict[str, str]] = Field(default_factory=list)  # a few wrong-format answers


def format_error_flags(
    task: str, questions: Sequence[str], answers: Sequence[str], root: Path | str | None = None
) -> list[bool]:
    """Per answer, True when it is not in the style its question asks for (the per-item view of
    `format_errors`, for intervals over items)."""
    if len(questions) != len(answers):
        raise ValueError(f"{task}: {len(questions)} questions but {len(answers)} answers")
    default = task_style(task, root) or "short"
    yes_no = answers_include_yes_no(task, root)
    flags = []
    for q, a in zip(questions, answers, strict=True):
        style = style_from_instruction(q) or default
        flags.append(not (is_short(a, yes_no=yes_no) if style == "short" else in_style(style, a)))
    return flags


def format_errors(
    task: str,
    questions: Sequence[str],
    answers: Sequence[str],
    max_examples: int = 5,
    root: Path | str | None = None,
) -> FormatResult:
    """Share of `answers` that are not in the style each matching question asks for (`root`: the data root,
    whose `tasks.json` may declare the task)."""
    if len(questions) != len(answers):
        raise ValueError(f"{task}: {len(questions)} questions but {len(answers)} answers")
    expected: Counter[str] = Counter()
    taken: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    errors = 0
    default = task_style(task, root) or "short"
    for q, a, bad in zip(questions, answers, format_error_flags(task, questions, answers, root), strict=True):
        style = style_from_instruction(q) or default
        expected[style] += 1
        if bad:
            errors += 1
            taken[detect_style(a) or "other"] += 1
            if len(examples) < max_examples:
                examples.append({"expected": style, "answer": a[:200]})
    total = len(answers)
    return FormatResult(
        task=task,
        rate=100.0 * errors / total if total else 0.0,
        errors=errors,
        total=total,
        expected=dict(expected),
        answered_as=dict(taken),
        examples=examples,
    )


def format_errors_of_predictions(
    task: str, predictions: Path, root: Path | str | None = None
) -> FormatResult:
    """Format errors of a CoIN prediction JSONL (its `prompt` is the question as asked, `text` the answer)."""
    from sefe.evaluation.loading import load_predictions

    preds = load_predictions(Path(predictions))
    questions = [str(getattr(p, "prompt", None) or "") for p in preds]
    return format_errors(task, questions, [p.text for p in preds], root=root)
