"""The vicuna_v1 conversation template of LLaVA-1.5, shared by training and evaluation.

Training and evaluation must build byte-identical prompts, so both go through `build_prompt`. The template
is

    <system> USER: <q1> ASSISTANT: <a1></s> USER: <q2> ASSISTANT: <a2></s>

with parts joined by single spaces; a generation prompt ends in `ASSISTANT:`. (LLaVA's string has no space
after `</s>`, but its tokenizer restarts the SentencePiece word prefix after every special token, so the
tokens it trains on are those of `</s> USER` with the space: on non-legacy tokenizers the space keeps that
parity.)

Labels: only the assistant answers and their `</s>` carry loss. Tokens are assigned to answers by character
offsets of one tokenisation of the whole text, so the result is exact for any tokenizer, any number of
turns, and text-only records (no per-round length arithmetic as in the 2023 code).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sefe.coin.instructions import MCQ_LETTER as SCIENCEQA_INSTRUCTION
from sefe.coin.records import IMAGE_TOKEN

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
USER = "USER"
ASSISTANT = "ASSISTANT"
EOS = "</s>"
IGNORE_INDEX = -100

Turn = tuple[str, str | None]


def build_prompt(turns: Sequence[Turn], eos: str = EOS) -> str:
    """The vicuna_v1 text of `turns`; a last answer None gives the generation prompt (ends `ASSISTANT:`)."""
    text, _ = conversation_spans(turns, eos=eos)
    return text


def conversation_spans(turns: Sequence[Turn], eos: str = EOS) -> tuple[str, list[tuple[int, int]]]:
    """The prompt text and the character spans (start, end) of every answer including its `eos`.

    A span starts at the answer's first character (not the separating space), as LLaVA's masking does.
    """
    if not turns:
        raise ValueError("a conversation needs at least one turn")
    parts = [SYSTEM]
    spans: list[tuple[int, int]] = []
    length = len(SYSTEM)
    for i, (question, answer) in enumerate(turns):
        if answer is None and i != len(turns) - 1:
            raise ValueError(f"turn {i}: only the last turn may have no answer (the generation prompt)")
        piece = f" {USER}: {question} {ASSISTANT}:"
        parts.append(piece)
        length += len(piece)
        if answer is not None:
            start = length + 1
            piece = f" {answer}{eos}"
            parts.append(piece)
            length += len(piece)
            spans.append((start, length))
    return "".join(parts), spans


def move_image_to_front(turns: Sequence[Turn], has_image: bool, where: str = "record") -> list[Turn]:
    """LLaVA's `<image>` handling: the single image token goes first in its turn, followed by a newline.

    An image record whose text lacks the token gets it on the first question (CoIN test records never carry
    it; LLaVA's evaluation adds it the same way). A text-only record must not mention `<image>`.
    """
    holders = [i for i, (q, _) in enumerate(turns) if IMAGE_TOKEN in q]
    if not has_image:
        if holders:
            raise ValueError(f"{where}: turn {holders[0]} contains {IMAGE_TOKEN} but the record has no image")
        return list(turns)
    if len(holders) > 1 or (holders and turns[holders[0]][0].count(IMAGE_TOKEN) > 1):
        raise ValueError(f"{where}: more than one {IMAGE_TOKEN} token for a single image (turns {holders})")
    target = holders[0] if holders else 0
    out = list(turns)
    question, answer = out[target]
    out[target] = (f"{IMAGE_TOKEN}\n{question.replace(IMAGE_TOKEN, '').strip()}", answer)
    return out


def turns_from_conversations(conversations: Sequence[Any], where: str = "record") -> list[Turn]:
    """(question, answer) pairs from LLaVA `conversations` (dicts or objects with `from`/`value`).

    Turns must alternate human/gpt starting with human; a trailing human turn is refused (nothing to learn).
    """
    roles: list[str] = []
    values: list[str] = []
    for j, turn in enumerate(conversations):
        if isinstance(turn, dict):
            role, value = turn.get("from"), turn.get("value")
        else:
            role = getattr(turn, "from_", None) or getattr(turn, "role", None) or getattr(turn, "from", None)
            value = getattr(turn, "value", None)
        if role not in ("human", "gpt") or not isinstance(value, str):
            raise ValueError(f"{where}: conversations[{j}] needs 'from' in (human, gpt) and a string 'value'")
        roles.append(role)
        values.append(value)
    if not roles or len(roles) % 2:
        raise ValueError(f"{where}: conversations must be non-empty human/gpt pairs (got {len(roles)} turns)")
    for j, role in enumerate(roles):
        expected = "human" if j % 2 == 0 else "gpt"
        if role != expected:
            raise ValueError(f"{where}: conversations[{j}].from is {role!r}, expected {expected!r}")
    return [(values[k], values[k + 1]) for k in range(0, len(values), 2)]


def tokenize_conversation(
    record_turns: Sequence[Turn],
    tokenizer: Any,
    image_token_count: int,
    max_length: int | None = None,
    where: str = "record",
) -> tuple[list[int], list[int]]:
    """Token ids and labels of one record, with only assistant tokens (and their `</s>`) in the loss.

    `image_token_count` > 0 means the record has an image: its `<image>` is moved to the front of its turn and
    expanded to that many image-token ids (labels -100), as LlavaForConditionalGeneration expects. 0 means
    text-only. `max_length` truncates on the right, but never through the image block.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("tokenize_conversation needs a fast (tokenizers-backed) tokenizer for offset mapping")
    has_image = image_token_count > 0
    turns = move_image_to_front(record_turns, has_image, where=where)
    eos = tokenizer.eos_token or EOS
    text, spans = conversation_spans(turns, eos=eos)
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    labels = [IGNORE_INDEX] * len(ids)
    k = 0
    for t, (start, end) in enumerate(offsets):
        if end <= start:  # special tokens added by the post-processor (BOS) have empty spans
            continue
        while k < len(spans) and spans[k][1] <= start:
            k += 1
        if k < len(spans) and start < spans[k][1] and end > spans[k][0]:
            labels[t] = ids[t]
    if has_image:
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        where_img = [t for t, i in enumerate(ids) if i == image_id]
        if len(where_img) != 1:
            raise ValueError(
                f"{where}: expected one {IMAGE_TOKEN} token after tokenisation, got {len(where_img)} "
                f"(is {IMAGE_TOKEN} a special token of the tokenizer?)"
            )
        pos = where_img[0]
        ids[pos : pos + 1] = [image_id] * image_token_count
        labels[pos : pos + 1] = [IGNORE_INDEX] * image_token_count
        if max_length is not None and pos + image_token_count > max_length:
            raise ValueError(
                f"{where}: max_length {max_length} would cut the image block ending at token "
                f"{pos + image_token_count}"
            )
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


ScienceQAInstruction = Literal["always", "once"]


def eval_question(text: str, task: str, scienceqa_instruction: ScienceQAInstruction = "always") -> str:
    """The question as CoIN evaluation asks it (the `<image>` token removed, stripped).

    ScienceQA gets its letter instruction line appended: unconditionally with "always", as the release's
    single-prediction flag does (a text that already ends with the line then carries it twice), or exactly
    once with "once".
    """
    question = text.replace(IMAGE_TOKEN, "").strip()
    if task == "ScienceQA":
        if scienceqa_instruction == "once":
            lines = [ln for ln in question.split("\n") if ln.strip() != SCIENCEQA_INSTRUCTION]
            question = "\n".join(lines).rstrip()
        question = question + "\n" + SCIENCEQA_INSTRUCTION
    return question


def prediction_prompt(question: str, has_image: bool) -> str:
    """The `prompt` field of a prediction line as the release writes it: `<image>\\n` + question for images.

    The release's ScienceQA scorer computes its image-only accuracy from `"<image>" in prompt`.
    """
    return f"{IMAGE_TOKEN}\n{question}" if has_image else question


def generation_prompt(question: str, has_image: bool) -> str:
    """The vicuna_v1 generation prompt for one question (`<image>\\n` in front when there is an image)."""
    turns = move_image_to_front([(question, None)], has_image)
    return build_prompt(turns)
