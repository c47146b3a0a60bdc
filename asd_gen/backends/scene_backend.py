"""`--backend scene`: a deterministic, scene-aware answerer for generated benchmarks (Micro-CoIN).

Why: on a benchmark whose pictures are drawn from known scenes, the assisting model's job (explanations and
region descriptions for the brief / detailed styles) can be done exactly from the scene, in milliseconds, with
no model: the explanation states the facts of the picture that decide the answer. It reads the truth from
`scenes.json` (image path relative to the data root -> scene), found in the first parent folder of the
request's image that holds one. Distractors are not its job: build with `--distractors pool` (Micro-CoIN's
candidates all come from the data).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from sefe.asd_gen.backends.base import Backend, ChatRequest, ChatResult, ResultCallback
from sefe.asd_gen.needs import GenerationOptions

SCENES_FILE = "scenes.json"
_QUESTION = re.compile(r"Question:\s*(.+)")
_TARGET = re.compile(r"(?:describes:|region)\s*(?:the\s+)?(.+?)[.\n]", re.IGNORECASE)


class SceneError(RuntimeError):
    pass


@lru_cache(maxsize=8)
def _scenes(path: str) -> dict[str, Any]:
    return orjson.loads(Path(path).read_bytes())


def scene_for(image_path: str) -> dict[str, Any]:
    """The scene of an image: walk up from the image to the folder holding `scenes.json`."""
    img = Path(image_path).resolve()
    for parent in img.parents:
        f = parent / SCENES_FILE
        if f.is_file():
            rel = img.relative_to(parent).as_posix()
            scene = _scenes(str(f)).get(rel)
            if scene is None:
                raise SceneError(f"{f}: no scene for {rel}")
            return scene
    raise SceneError(f"no {SCENES_FILE} above {img}: the scene backend needs a generated data root")


_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "centre", "right")


def _where(cell: Sequence[int]) -> str:
    r, c = cell
    if (r, c) == (1, 1):
        return "in the centre"
    if r == 1:
        return f"on the {_COLS[c]}"
    if c == 1:
        return f"at the {_ROWS[r]}"
    return f"at the {_ROWS[r]} {_COLS[c]}"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _mentioned(scene: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """Objects the question names (by colour and shape, or by shape alone)."""
    low = text.lower()
    objs = scene.get("objects") or []
    both = [o for o in objs if f"{o['colour']} {o['shape']}" in low]
    return both or [o for o in objs if o["shape"] in low]


def asked_fact(question: str) -> str:
    """Which fact of the picture a question asks for: count, word, colour, side, shape or place."""
    low = question.lower()
    if "how many" in low or "count" in low:
        return "count"
    if "word" in low or "written" in low or "text" in low:
        return "word"
    if "colour" in low or "color" in low:
        return "colour"
    if "side" in low:
        return "side"
    if "shape" in low or "what is the object" in low:
        return "shape"
    return "place"  # grounding targets and anything else: where the named object is


def explanation(scene: dict[str, Any], question: str, detail: bool) -> str:
    """The one fact of the scene that decides the answer to *this* question, never another task's.

    Why only that fact: an explanation that also states every object's colour, place and the count (as the
    first version did) replays other tasks' knowledge inside ASD data, so ASD would act as knowledge replay
    and its effect could not be told from the style cure. `detail` says the same fact at more length."""
    fact = asked_fact(question)
    if fact == "word" or scene.get("word"):
        word = scene.get("word") or ""
        brief = f'The word written in the picture is "{word}".'
        more = f" Its letters, read one after another from left to right, spell {word.lower()}."
        return brief + (more if detail else "")
    objs = scene.get("objects") or []
    if fact == "count":
        n = len(objs)
        brief = "There is one shape in the picture." if n == 1 else f"There are {n} shapes in the picture."
        more = f" Counting every shape once, and none twice, gives {n}."
        return brief + (more if detail else "")
    named = _mentioned(scene, question)
    o = (named or objs)[0]
    who = (
        f"The {o['colour']} {o['shape']}"
        if named and f"{o['colour']} {o['shape']}" in question.lower()
        else (f"The {o['shape']}" if named else "The object")
    )
    if fact == "colour":
        brief = f"{who} is {o['colour']}."
        more = f" Its whole surface is drawn in {o['colour']}, which is the colour asked for."
    elif fact == "shape":
        brief = f"{who} is {_article(o['shape'])} {o['shape']}."
        more = (
            f" Its outline has the form of {_article(o['shape'])} {o['shape']}, which is the shape asked for."
        )
    elif fact == "side":
        low = question.lower()
        side = next((x for x in ("left", "right", "top", "bottom") if f"{x} side" in low), "left")
        r, c = o["cell"]
        on = {"left": c == 0, "right": c == 2, "top": r == 0, "bottom": r == 2}[side]
        brief = f"{who} is {'' if on else 'not '}on the {side} side of the picture."
        more = f" It sits {'in' if on else 'outside'} the {side} third of the picture."
    else:
        brief = f"{who} is {_where(o['cell'])} of the picture."
        more = " Its region is the cell of an invisible three by three grid that it fills."
    return brief + (more if detail else "")


def _fill(schema: dict[str, Any], scene: dict[str, Any], questions: list[str], detail: bool, i: int) -> Any:
    """An instance of the request's strict schema, explanations filled in from the scene."""
    kind = schema.get("type")
    if kind == "array":
        n = int(schema.get("minItems", 1))
        return [_fill(schema["items"], scene, questions, detail, j) for j in range(n)]
    if kind == "object":
        out: dict[str, Any] = {}
        for name, sub in schema.get("properties", {}).items():
            q = questions[i] if i < len(questions) else (questions[-1] if questions else "")
            if name in ("explanation", "description"):
                out[name] = explanation(scene, q, detail)
            elif name in ("question_index", "target_index"):
                out[name] = i + 1
            elif name == "question":
                out[name] = q
            elif sub.get("type") in ("array", "object"):
                out[name] = _fill(sub, scene, questions, detail, i)
            elif name in ("distractors", "distractor", "distractor_option", "distractor_options"):
                raise SceneError("the scene backend writes explanations only: build with --distractors pool")
            else:
                out[name] = ""
        return out
    if kind == "integer":
        return i + 1
    return ""


def _user_text(request: ChatRequest) -> str:
    parts = []
    for m in request.messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"]
    return "\n".join(parts)


class SceneBackend(Backend):
    """Answers explanation / description requests from the scene of the request's image."""

    name = "scene"

    def __init__(self, options: GenerationOptions) -> None:
        self.options = options

    @property
    def model_name(self) -> str:
        return "scene-answerer-v1"

    def answer(self, request: ChatRequest) -> str:
        if request.image_path is None:
            raise SceneError("the scene backend needs the request's image (text-only record)")
        scene = scene_for(request.image_path)
        text = _user_text(request)
        questions = [m.group(1).strip() for m in _QUESTION.finditer(text)]
        if not questions:  # grounding prompts list targets instead of questions
            questions = [m.group(1).strip() for m in _TARGET.finditer(text)] or [text]
        detail = "detail" in request.schema_name
        return orjson.dumps(_fill(request.json_schema, scene, questions, detail, 0)).decode()

    def run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        for req in requests:
            try:
                on_result(ChatResult(key=req.key, text=self.answer(req), finish_reason="stop"))
            except (SceneError, OSError, KeyError, ValueError) as exc:
                on_result(ChatResult(key=req.key, error=f"scene backend: {exc}"))
