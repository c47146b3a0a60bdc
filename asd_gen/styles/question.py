"""Split a question turn into its parts and put a converted question back together.

A CoIN question is: an optional `<image>` token, context lines (`Context: ...`, `Reference OCR token: ...`),
the question, option lines (`A. ...`), and usually a trailing instruction line. The instruction line's exact
text differs per task and is not always published, so it is *detected* (known lines + a heuristic for
answer-format imperatives) rather than matched against one fixed string; the detected line is removed and the
target style's line is appended, so a converted question never carries two instructions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sefe.coin.instructions import DEFAULT_CONTEXT_PREFIXES, KNOWN_INSTRUCTIONS
from sefe.coin.records import IMAGE_TOKEN

OPTION_RE = re.compile(r"^([A-Z])\.\s+(.*\S)\s*$")

# Lines that tell the model how to format its answer (not what to answer). Only the *last* line(s) of a
# question are tested, and a question always keeps at least one line.
INSTRUCTION_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^(please\s+)?(answer|respond|reply)\b",
        r"^(please\s+)?(choose|select|pick)\b.*\b(option|letter|choice|answer)s?\b",
        r"^(please\s+)?(give|provide|output|return)\b.*\b(answer|letter|single word|phrase|yes or no)\b",
        r"^when (the )?(provided )?information is insufficient",
        r"^is the (candidate|proposed) answer correct\b",
    )
)


class QuestionError(ValueError):
    """A question turn that cannot be split (e.g. nothing but an instruction)."""


def _norm(line: str) -> str:
    return " ".join(line.split()).casefold()


_KNOWN = frozenset(_norm(s) for s in KNOWN_INSTRUCTIONS)


def is_instruction_line(line: str, extra: Iterable[str] = ()) -> bool:
    """Whether a line is a response-format instruction (known text, task-declared text, or the heuristic)."""
    n = _norm(line)
    if not n:
        return False
    if n in _KNOWN or n in {_norm(e) for e in extra}:
        return True
    return any(p.search(n) for p in INSTRUCTION_PATTERNS)


@dataclass(frozen=True)
class QuestionParts:
    """A question turn without its instruction line(s)."""

    image: Literal["start", "end"] | None  # where `<image>` was (LLaVA puts it first)
    pre: tuple[str, ...]  # context lines before the question
    question: str  # the question itself (may span several lines)
    post: tuple[str, ...]  # context lines after the question (e.g. OCR tokens)
    options: tuple[str, ...]  # option texts without letters (MCQ originals such as ScienceQA)
    instruction: tuple[str, ...]  # the instruction line(s) that were removed

    @property
    def context(self) -> str | None:
        """The `Context:` text, for prompts (ScienceQA)."""
        for line in (*self.pre, *self.post):
            if line.startswith("Context:"):
                return line[len("Context:") :].strip() or None
        return None


def _option_block(lines: Sequence[str]) -> tuple[int, int] | None:
    """The last run of lines lettered A., B., C., ... (at least two); (start, end) half-open."""
    best: tuple[int, int] | None = None
    i = 0
    while i < len(lines):
        m = OPTION_RE.match(lines[i])
        if m and m.group(1) == "A":
            j = i + 1
            while (
                j < len(lines) and (m2 := OPTION_RE.match(lines[j])) and ord(m2.group(1)) - ord("A") == j - i
            ):
                j += 1
            if j - i >= 2:
                best = (i, j)
            i = j
        else:
            i += 1
    return best


def split_question(
    text: str,
    *,
    context_prefixes: Sequence[str] = DEFAULT_CONTEXT_PREFIXES,
    extra_instructions: Iterable[str] = (),
    parse_options: bool = False,
) -> QuestionParts:
    """Split a human turn; `parse_options` only for tasks whose questions carry lettered options."""
    extra = tuple(extra_instructions)
    stripped = text.strip()
    image: Literal["start", "end"] | None = None
    if stripped.startswith(IMAGE_TOKEN):
        image = "start"
    elif stripped.endswith(IMAGE_TOKEN):
        image = "end"
    elif IMAGE_TOKEN in stripped:
        image = "start"
    lines = [ln.strip() for ln in stripped.replace(IMAGE_TOKEN, "").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise QuestionError("the question is empty")

    instruction: list[str] = []
    while len(lines) > 1 and is_instruction_line(lines[-1], extra):
        instruction.insert(0, lines.pop())

    options: tuple[str, ...] = ()
    after_options: list[str] = []
    if parse_options and (block := _option_block(lines)):
        s, e = block
        options = tuple(OPTION_RE.match(ln).group(2) for ln in lines[s:e])  # type: ignore[union-attr]
        after_options = lines[e:]
        lines = lines[:s]

    is_ctx = [any(ln.startswith(p) for p in context_prefixes) for ln in lines]
    q_idx = [i for i, c in enumerate(is_ctx) if not c]
    if not q_idx:  # nothing but context-like lines: they are the question
        q_idx = list(range(len(lines)))
    if not q_idx:
        raise QuestionError("no question text besides option/instruction lines")
    first, last = q_idx[0], q_idx[-1]
    return QuestionParts(
        image=image,
        pre=tuple(lines[:first]),
        question="\n".join(lines[first : last + 1]),
        post=(*lines[last + 1 :], *after_options),
        options=options,
        instruction=tuple(instruction),
    )


def option_lines(options: Sequence[str]) -> list[str]:
    return [f"{chr(ord('A') + i)}. {opt}" for i, opt in enumerate(options)]


def join_question(parts: QuestionParts, body: Sequence[str], instruction: str, *, with_image: bool) -> str:
    """Rebuild a question: `<image>` where it was, context, question, body lines, one instruction line."""
    lines = [*parts.pre, parts.question, *parts.post, *body, instruction]
    text = "\n".join(ln for ln in lines if ln)
    if with_image and parts.image == "end":
        return f"{text}\n{IMAGE_TOKEN}"
    if with_image and parts.image == "start":
        return f"{IMAGE_TOKEN}\n{text}"
    return text
