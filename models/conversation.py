"""The vicuna_v1 conversation template of LLaVA-1.5, shared by training and evaluation.

Training and evaluation must build byte-identical prompts, so both go through `build_prompt`. The template
is

    <system> USER: <q1> ASSISTANT: <a1></s>USER: <q2> ASSISTANT: <a2></s>

exactly LLaVA's string: a space after a question, `</s>` with no space after an answer; a generation prompt
ends in `ASSISTANT:`. Token ids and labels are made from it in `sefe.models.tokenization` (the release's
`preprocess_v1`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sefe.coin.records import IMAGE_TOKEN
from sefe.coin.tasks import TaskError, TaskSpec, get_task
from sefe.errors import InputError

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
    text = SYSTEM + " "
    spans: list[tuple[int, int]] = []
    for i, (question, answer) in enumerate(turns):
        if answer is None and i != len(turns) - 1:
            raise ValueError(f"turn {i}: only the last turn may have no answer (the generation prompt)")
        text += f"{USER}: {question} {ASSISTANT}:"
        if answer is not None:
            text += " "
            start = len(text)
            text += f"{answer}{eos}"
            spans.append((start, len(text)))
    return text, spans


def move_image_to_front(turns: Sequence[Turn], has_image: bool, where: str = "record") -> list[Turn]:
    """LLaVA's `<image>` handling: the single image token goes first in its turn, followed by a newline.

    An image record whose text lacks the token gets it on the first question (CoIN test records never carry
    it; LLaVA's evaluation adds it the same way). A text-only record must not mention `<image>`.
    """
    holders = [i for i, (q, _) in enumerate(turns) if IMAGE_TOKEN in q]
    if not has_image:
        if holders:
            raise InputError(f"{where}: turn {holders[0]} contains {IMAGE_TOKEN} but the record has no image")
        return list(turns)
    if len(holders) > 1 or (holders and turns[holders[0]][0].count(IMAGE_TOKEN) > 1):
        raise InputError(f"{where}: more than one {IMAGE_TOKEN} token for a single image (turns {holders})")
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
            raise InputError(f"{where}: conversations[{j}] needs 'from' in (human, gpt) and a string 'value'")
        roles.append(role)
        values.append(value)
    if not roles or len(roles) % 2:
        raise InputError(f"{where}: conversations must be non-empty human/gpt pairs (got {len(roles)} turns)")
    for j, role in enumerate(roles):
        expected = "human" if j % 2 == 0 else "gpt"
        if role != expected:
            raise InputError(f"{where}: conversations[{j}].from is {role!r}, expected {expected!r}")
    return [(values[k], values[k + 1]) for k in range(0, len(values), 2)]


ScienceQAInstruction = Literal["always", "once"]


def eval_question(
    text: str, task: str | TaskSpec, scienceqa_instruction: ScienceQAInstruction = "always"
) -> str:
    """The question as CoIN evaluation asks it (the `<image>` token removed, stripped).

    A task whose spec names an `eval_appends` line (ScienceQA's letter line) gets it appended: unconditionally
    with "always", as the release's single-prediction flag does (a text that already ends with the line then
    carries it twice), or exactly once with "once". A task name no registry knows appends nothing.
    """
    question = text.replace(IMAGE_TOKEN, "").strip()
    spec = _spec(task)
    line = spec.eval_appends if spec is not None else None
    if line is not None:
        if scienceqa_instruction == "once":
            lines = [ln for ln in question.split("\n") if ln.strip() != line]
            question = "\n".join(lines).rstrip()
        question = question + "\n" + line
    return question


def _spec(task: str | TaskSpec) -> TaskSpec | None:
    if isinstance(task, TaskSpec):
        return task
    try:
        return get_task(task)
    except TaskError:
        return None  # a data root's own task (tasks.json): such roots declare no appended line


def prediction_prompt(question: str, has_image: bool) -> str:
    """The `prompt` field of a prediction line as the release writes it: `<image>\\n` + question for images.

    The release's ScienceQA scorer computes its image-only accuracy from `"<image>" in prompt`.
    """
    return f"{IMAGE_TOKEN}\n{question}" if has_image else question


def generation_prompt(question: str, has_image: bool) -> str:
    """The vicuna_v1 generation prompt for one question (`<image>\\n` in front when there is an image)."""
    turns = move_image_to_front([(question, None)], has_image)
    return build_prompt(turns)
