"""The EvalAI answer processor used by TextVQA soft accuracy, reproduced step by step with its quirks.

Published TextVQA numbers depend on every detail of this normaliser, including two bugs we keep on purpose:
the period-stripping regex has a malformed look-behind (`(?!<=\\d)` is a look-AHEAD for the text `<=digit`,
so it never blocks anything) and the reference passes `re.UNICODE` (value 32) where `re.sub` expects its
`count`, so at most 32 periods are deleted. The tables ship as package data (`vqa_answer_normalization.json`).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import orjson
from pydantic import BaseModel, ConfigDict

TABLES_FILE = "vqa_answer_normalization.json"
PERIOD_STRIP_COUNT = int(re.UNICODE)  # 32: the flag value the reference passes as `count`


class NormalizationTables(BaseModel):
    """The EvalAI lookup tables (contractions, number words, articles, punctuation, the two regexes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    CONTRACTIONS: dict[str, str]
    NUMBER_MAP: dict[str, str]
    ARTICLES: list[str]
    PUNCTUATIONS: list[str]
    PERIOD_STRIP_PATTERN: str
    COMMA_STRIP_PATTERN: str


@cache
def tables() -> NormalizationTables:
    """Load the shipped tables once."""
    raw = resources.files("sefe.evaluation").joinpath(TABLES_FILE).read_bytes()
    return NormalizationTables.model_validate(orjson.loads(raw))


@cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    t = tables()
    return re.compile(t.PERIOD_STRIP_PATTERN), re.compile(t.COMMA_STRIP_PATTERN)


def word_tokenize(text: str) -> str:
    """Step 1: lowercase, drop `,` and `?`, split off the possessive `'s`, strip."""
    return text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()


def process_punctuation(in_text: str) -> str:
    """Step 3: delete or blank each punctuation mark, then delete up to 32 periods not followed by a digit.

    The delete-vs-space decision looks at the INPUT text for every mark, not at the text as it is rewritten.
    """
    period_strip, comma_strip = _patterns()
    out_text = in_text
    has_digit_comma = comma_strip.search(in_text) is not None
    for p in tables().PUNCTUATIONS:
        if (p + " " in in_text or " " + p in in_text) or has_digit_comma:
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return period_strip.sub("", out_text, count=PERIOD_STRIP_COUNT)


def process_digit_article(in_text: str) -> str:
    """Step 4: number words to digits (`none` -> `0`), drop articles, restore contractions."""
    t = tables()
    words = [t.NUMBER_MAP.get(w, w) for w in in_text.lower().split()]
    kept = [w for w in words if w not in t.ARTICLES]
    return " ".join(t.CONTRACTIONS.get(w, w) for w in kept)


def normalize_answer(text: str) -> str:
    """The full EvalAI processor: steps 1-4 in order."""
    text = word_tokenize(text)
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = process_punctuation(text)
    return process_digit_article(text)
