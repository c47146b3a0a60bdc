"""Token estimates for `sefe asd plan` and `Engine.estimate`: one set of figures, so the two always agree.

A ballpark, not a tokenizer: about 4 characters a token for English text, a fixed cost per image, and a
typical answer size per Need kind (JSON around the content included). With the rendered prompt at hand (the
engine) the prompt is counted from its text; without it (no engine) a fixed prompt cost is added to the text
of the record itself.
"""

from __future__ import annotations

from sefe.asd_gen.needs import Need, NeedKind

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 576  # one image in LLaVA-1.5 (576 patches); OpenAI's vision models count 85..765
PROMPT_TOKENS = 250  # the instructions of a generation prompt, when it is not rendered
ANSWER_OVERHEAD_TOKENS = 8  # the JSON object around the items
ITEM_OUT_TOKENS: dict[NeedKind, int] = {"yn": 14, "mcq": 35, "brief": 45, "detail": 95}


def text_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN


def tokens_out(need: Need) -> int:
    return ANSWER_OVERHEAD_TOKENS + ITEM_OUT_TOKENS[need.kind] * len(need.items)


def tokens_in_rendered(need: Need, system: str, user: str) -> int:
    """Input tokens of a rendered request."""
    return text_tokens(system) + text_tokens(user) + (IMAGE_TOKENS if need.image else 0)


def tokens_in_rough(need: Need) -> int:
    """Input tokens without rendering: a fixed prompt cost plus the record's own text."""
    chars = sum(
        len(i.question) + len(i.answer) + len(i.context or "") + sum(map(len, i.options or []))
        for i in need.items
    )
    return PROMPT_TOKENS + chars // CHARS_PER_TOKEN + (IMAGE_TOKENS if need.image else 0)
