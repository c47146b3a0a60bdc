"""Prompt rendering: Jinja templates shipped in `sefe/prompts/`, overrides from `--prompts DIR`, and the
official SEFE prompt-file format, so CoIN-ASD can be regenerated with the authors' own prompts.

Lookup for one (task, kind, image or not), first hit wins:
1. `DIR/<Task>/<file>.txt` in the official format (`<SYSTEM PROMPT>` / `<USER PROMPT>` sections), where
   `<file>` is `{brief,detail,mcq,yn}`, or `{brief,detail}_{w,wo}_image` for ScienceQA;
2. `DIR/<Task>/<kind>_{w,wo}_image.j2`, `DIR/<Task>/<kind>.j2`, `DIR/default/<kind>.j2`;
3. the same Jinja names in the shipped templates.
The system prompt of Jinja templates comes from `<Task>/system.j2` or `default/system.j2` likewise.
Each resolved template has a sha256 over its sources: it is part of every request fingerprint, so editing a
prompt re-asks exactly the requests that used it.

Prompt folders are downloaded and shared like datasets, so a template is untrusted input: it is rendered in
Jinja's immutable sandbox with no globals but `range`, so it can only format the record's fields. A template
reaching for anything else (`cycler.__init__.__globals__...`, attributes starting with `_`, mutating a list)
is a `TemplateRenderError` naming the file and line: `asd plan` and `asd build` stop with it, exit 2.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import orjson

from sefe.asd_gen.needs import Need, NeedKind, QAItem
from sefe.asd_gen.schemas import N_DISTRACTORS, Shape
from sefe.asd_gen.styles.boxes import format_box, referring_expression, unpad_box
from sefe.errors import InputError

TARGET_WORDS = {"brief": 20, "detail": 50}
_SYSTEM_MARK = "<SYSTEM PROMPT>"
_USER_MARK = "<USER PROMPT>"
_INCLUDE = re.compile(r"""{%-?\s*include\s+["']([^"']+)["']""")
_PLACEHOLDER = re.compile(r"<(question_list|question|answer|gt_category|target_list)>")


class PromptError(InputError):
    """A prompt file is malformed or cannot serve a Need (message names the file)."""


class TemplateRenderError(PromptError):
    """A template failed to render (a sandbox violation, an unknown variable): the template's fault, not the
    record's, so estimates and builds stop instead of skipping the record."""


def _sha(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def split_official(text: str, path: str) -> tuple[str, str]:
    """Split an official prompt file into (system, user) text; both markers are required, in that order."""
    lines = text.splitlines()
    marks = [ln.strip() for ln in lines]
    if _SYSTEM_MARK not in marks or _USER_MARK not in marks:
        raise PromptError(f"{path}: expected lines {_SYSTEM_MARK} and {_USER_MARK}")
    s, u = marks.index(_SYSTEM_MARK), marks.index(_USER_MARK)
    if u < s:
        raise PromptError(f"{path}: {_USER_MARK} comes before {_SYSTEM_MARK}")
    return "\n".join(lines[s + 1 : u]).strip(), "\n".join(lines[u + 1 :]).strip()


def _official_shape(user: str, path: str) -> Shape:
    found = set(_PLACEHOLDER.findall(user))
    if "target_list" in found:
        return "official_grounding"
    if "gt_category" in found:
        return "official_imagenet"
    if "question_list" in found:
        return "official_list"
    if "question" in found:
        return "official_single"
    raise PromptError(f"{path}: no placeholder <question_list>, <question>, <gt_category> or <target_list>")


def _image_size(need: Need, data_root: Path | None) -> tuple[int, int]:
    if not (need.image and data_root):
        raise PromptError(
            f"record {need.record_id}: a Grounding prompt needs the record's image (its width and height "
            "convert the box the model is shown)"
        )
    from sefe.coin.images import ImageError, image_size

    try:
        return image_size(data_root, need.image, f"record {need.record_id}")
    except ImageError as exc:
        raise PromptError(str(exc)) from None


def _target_box(answer: str, need: Need, data_root: Path | None) -> list[float]:
    """A Grounding box as the prompt promises it: fractions of the unpadded image's width and height.

    CoIN's boxes are fractions of the square-padded image (converted with `unpad_box`); pixel boxes (a value
    above 1) are divided by the width and height. The image sent to the model is the unpadded original.
    """
    try:
        box = [float(v) for v in orjson.loads(answer)]
    except (orjson.JSONDecodeError, TypeError, ValueError):
        raise PromptError(
            f"record {need.record_id}: answer {answer!r} is not a box [x1, y1, x2, y2]"
        ) from None
    if len(box) != 4:
        raise PromptError(f"record {need.record_id}: box {answer!r} needs 4 numbers")
    width, height = _image_size(need, data_root)
    if max(box) > 1.0:
        out: Sequence[float] = [box[0] / width, box[1] / height, box[2] / width, box[3] / height]
    else:
        out = unpad_box(box, width, height)
    return [round(v, 3) for v in out]


def _full_question(item: QAItem) -> str:
    """A single question as the record states it: its `Context:` line, the question, its lettered options.

    The official ScienceQA prompts explain an option: without the context and the options they cannot.
    """
    lines = [f"Context: {item.context}"] if item.context else []
    lines.append(item.question)
    lines += [f"{chr(ord('A') + i)}. {opt}" for i, opt in enumerate(item.options or [])]
    return "\n".join(lines)


def _is_box_task(task: str, data_root: Path | None) -> bool:
    from sefe.coin.root_tasks import find_task
    from sefe.coin.tasks import TaskError

    try:
        return find_task(task, data_root).answer == "box"
    except TaskError:
        return False


def _json_lines(rows: list[dict[str, Any]]) -> str:
    return "[\n" + ",\n".join("  " + orjson.dumps(r).decode() for r in rows) + "\n]"


@dataclass(frozen=True)
class ResolvedPrompt:
    """One prompt source for a (task, kind, image) triple."""

    name: str
    sha256: str
    shape: Shape
    system_src: str
    user_src: str
    official: bool

    def fill_official(self, need: Need, data_root: Path | None = None) -> str:
        return self._fill_official(need, data_root)

    def _fill_official(self, need: Need, data_root: Path | None) -> str:
        items = need.items
        if self.shape == "official_single" and len(items) != 1:
            raise PromptError(
                f"{self.name}: single-question prompt, record {need.record_id} has {len(items)}"
            )
        values = {
            "question": _full_question(items[0]),
            "answer": items[0].answer,
            "gt_category": items[0].answer,
            "question_list": _json_lines(
                [
                    {"question_index": i, "question": q.question, "answer": q.answer}
                    for i, q in enumerate(items, 1)
                ]
            ),
        }
        if self.shape == "official_grounding":
            values["target_list"] = _json_lines(
                [
                    {
                        "target_index": i,
                        "expression": referring_expression(q.question),
                        "bbox": _target_box(q.answer, need, data_root),
                    }
                    for i, q in enumerate(items, 1)
                ]
            )
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.user_src)


def _context(need: Need, data_root: Path | None) -> dict[str, Any]:
    """Template variables; Grounding items carry the referring expression and the unpadded box (as the
    official prompts), since the image the model sees is the unpadded original."""
    boxes = _is_box_task(need.task, data_root)

    def shown(q: QAItem) -> tuple[str, str]:
        if not boxes:
            return q.question, q.answer
        box = _target_box(q.answer, need, data_root)
        return referring_expression(q.question), format_box(tuple(box), 3)  # type: ignore[arg-type]

    items = []
    for i, q in enumerate(need.items, 1):
        question, answer = shown(q)
        items.append(
            {"index": i, "question": question, "answer": answer, "context": q.context, "options": q.options}
        )
    return {
        "task": need.task,
        "kind": need.kind,
        "has_image": need.image is not None,
        "n": len(need.items),
        "n_distractors": N_DISTRACTORS.get(need.kind, 0),
        "words": TARGET_WORDS.get(need.kind, 0),
        "items": items,
    }


def official_file_name(task: str, kind: NeedKind, has_image: bool) -> str:
    """Per-task file name of the SEFE release (ScienceQA splits explanations by image presence)."""
    if task == "ScienceQA" and kind in ("brief", "detail"):
        return f"ScienceQA/{kind}_{'w' if has_image else 'wo'}_image.txt"
    return f"{task}/{kind}.txt"


def builtin_prompts_dir() -> Path:
    return Path(str(files("sefe.prompts")))


class PromptSet:
    """Resolves and renders prompts; `--prompts DIR` overrides per file and may hold official `.txt` files."""

    def __init__(self, prompts_dir: str | Path | None = None) -> None:
        self.user_dir = Path(prompts_dir) if prompts_dir else None
        if self.user_dir is not None and not self.user_dir.is_dir():
            raise PromptError(f"--prompts {self.user_dir}: not a folder")
        self.dirs = [d for d in (self.user_dir, builtin_prompts_dir()) if d is not None]
        self.env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.dirs]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Only the record's fields (passed per render) and `range`: no cycler/joiner/namespace/lipsum/dict.
        self.env.globals.clear()
        self.env.globals["range"] = range
        self._cache: dict[tuple[str, str, bool], ResolvedPrompt] = {}
        self._compiled: dict[str, tuple[jinja2.Template, jinja2.Template]] = {}

    def _compile(self, source: str, path: str) -> jinja2.Template:
        """A template that knows its file name, so a render error can name the file and line."""
        try:
            code = self.env.compile(source, filename=path)
        except jinja2.TemplateSyntaxError as e:
            raise PromptError(f"{path}: line {e.lineno}: {e.message}") from None
        return self.env.template_class.from_code(self.env, code, self.env.globals, None)

    def _find(self, names: list[str]) -> tuple[str, str]:
        for d in self.dirs:
            for name in names:
                p = d / name
                if p.is_file():
                    return str(p), p.read_text(encoding="utf-8")
        raise PromptError(f"no prompt template among {names} in {[str(d) for d in self.dirs]}")

    def resolve(self, task: str, kind: NeedKind, has_image: bool) -> ResolvedPrompt:
        key = (task, kind, has_image)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._resolve(task, kind, has_image)
        return hit

    def _resolve(self, task: str, kind: NeedKind, has_image: bool) -> ResolvedPrompt:
        if self.user_dir is not None:
            off = self.user_dir / official_file_name(task, kind, has_image)
            if off.is_file():
                system, user = split_official(off.read_text(encoding="utf-8"), str(off))
                shape = _official_shape(user, str(off))
                name = f"official:{official_file_name(task, kind, has_image)}"
                return ResolvedPrompt(name, _sha(system, user), shape, system, user, official=True)
        img = "w" if has_image else "wo"
        user_path, user = self._find(
            [f"{task}/{kind}_{img}_image.j2", f"{task}/{kind}.j2", f"default/{kind}.j2"]
        )
        sys_path, system = self._find([f"{task}/system.j2", "default/system.j2"])
        name = f"{_short(user_path)}+{_short(sys_path)}"
        includes = sorted(set(_INCLUDE.findall(system + user)))
        for inc in includes:  # Jinja's loader refuses these too; never read them, even to hash them
            if inc.startswith(("/", "\\")) or ".." in inc.replace("\\", "/").split("/"):
                raise PromptError(f"{user_path} or {sys_path}: include {inc!r} leaves the prompt folders")
        included = [self._find([inc])[1] for inc in includes]
        self._compiled[name] = (self._compile(system, sys_path), self._compile(user, user_path))
        return ResolvedPrompt(name, _sha(system, user, *included), "native", system, user, official=False)

    def render(self, need: Need, data_root: Path | None = None) -> tuple[ResolvedPrompt, str, str]:
        """(resolved prompt, system text, user text) for one Need."""
        rp = self.resolve(need.task, need.kind, need.image is not None)
        if rp.official:
            return rp, rp.system_src, rp.fill_official(need, data_root)
        sys_t, user_t = self._compiled[rp.name]
        ctx = _context(need, data_root)
        try:
            return rp, sys_t.render(**ctx).strip(), user_t.render(**ctx).strip()
        except jinja2.TemplateError as e:
            where = _template_line(e) or rp.name
            kind = "not allowed in a prompt template" if isinstance(e, jinja2.sandbox.SecurityError) else ""
            msg = f"{e.message or type(e).__name__}" + (f" ({kind})" if kind else "")
            raise TemplateRenderError(f"{where}: record {need.record_id}: {msg}") from None


def _template_line(exc: BaseException) -> str | None:
    """`file: line N` of the innermost template frame of a render error (Jinja rewrites the traceback so
    that template frames carry the template's file name and line)."""
    found = None
    tb = exc.__traceback__ or sys.exc_info()[2]
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name.endswith(".j2") or name == "<template>":
            found = f"{name}: line {tb.tb_lineno}"
        tb = tb.tb_next
    return found


def _short(path: str) -> str:
    p = Path(path)
    return f"{p.parent.name}/{p.name}"
