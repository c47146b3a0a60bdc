"""Task registry: the eight CoIN tasks in training order, and any task declared in YAML.

A `TaskSpec` says what a task's answers are (option letter, text, box), its original answer style, where ASD
finds wrong candidates, its question form, the CoIN scorer that scores it and the answer style the format
checks expect. The CoIN order lives here only (`COIN_TASK_NAMES`); training, ASD, inference and scoring read
it from here. Any other LLaVA-format dataset can be declared in a YAML file (see `configs/tasks/example.yaml`)
and loaded with `load_task_file`, or in a data root's `tasks.json` (`sefe.coin.root_tasks`), so sefe is not
tied to CoIN.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sefe.coin.instructions import DEFAULT_CONTEXT_PREFIXES, MCQ_LETTER, SHORT_ANSWER, STYLES, Style
from sefe.errors import InputError

# Where the wrong answers for yes/no and MCQ come from:
#   model   - written by the assisting model (or drawn from the task's answer pool with `--distractors pool`)
#   options - the record's own lettered options (ScienceQA)
#   classes - other answers of the task, i.e. the class names (ImageNet)
#   boxes   - other boxes of the same image or perturbed boxes with IoU < 0.5 (Grounding)
CandidateSource = Literal["model", "options", "classes", "boxes"]
Production = Literal["original", "rule", "data", "model"]
#: The eight CoIN scorers (`sefe.evaluation.scorers`), each named after the task it was written for.
ScorerName = Literal["ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA"]
SCORER_NAMES: tuple[ScorerName, ...] = get_args(ScorerName)
#: The answer forms the format checks tell apart (`sefe.evaluation.format_checks` has one checker each).
AnswerStyle = Literal["letter", "yesno", "short", "box", "explained"]
ANSWER_STYLES: tuple[AnswerStyle, ...] = get_args(AnswerStyle)


def _not_a_path(name: str) -> str:
    """A task name becomes a folder (`annotations/<name>/`): `.` and `..` would be the folder itself or its
    parent, so a name made of dots only is refused."""
    if set(name) == {"."}:
        raise ValueError(f"task name {name!r} is a path, not a name")
    return name


#: A task name: letters, digits, `_`, `.`, `-`, and never only dots (it names a folder).
TaskName = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$"), AfterValidator(_not_a_path)]


class TaskSpec(BaseModel):
    """Everything ASD needs to know about one task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: TaskName
    original_style: Literal["short", "mcq"] = "short"
    answer: Literal["text", "option", "box"] = "text"  # what the original gpt turn holds
    candidates: CandidateSource = "model"
    question_form: Literal["single", "list"] = "single"  # list: several QA turns per record, one prompt
    instruction_lines: tuple[str, ...] = ()  # this task's known instruction lines (besides the heuristic)
    context_prefixes: tuple[str, ...] = DEFAULT_CONTEXT_PREFIXES
    scorer: ScorerName | None = None  # the CoIN scorer of its predictions (None: not scorable)
    style: AnswerStyle = "short"  # the answer form the format checks expect when the question does not say
    # a line CoIN's evaluation appends to every question of this task (ScienceQA: the letter line, as the
    # release's single-prediction flag does), None for most tasks
    eval_appends: str | None = None

    @field_validator("scorer", mode="before")
    @classmethod
    def _scorer_any_case(cls, value: object) -> object:
        """`vqav2` names the VQAv2 scorer (tasks.json files are written by hand too)."""
        if isinstance(value, str):
            return next((s for s in SCORER_NAMES if s.lower() == value.lower()), value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        own = next((s for s in SCORER_NAMES if s.lower() == self.name.lower()), None)
        if own is not None and self.scorer != own:
            raise ValueError(f"{self.name!r} is a CoIN task: it is scored by the {own} scorer")
        if self.answer == "option" and (self.original_style != "mcq" or self.candidates != "options"):
            raise ValueError("answer 'option' needs original_style 'mcq' and candidates 'options'")
        if self.original_style == "mcq" and self.answer != "option":
            raise ValueError("original_style 'mcq' needs answer 'option' (lettered options in the question)")
        if self.answer == "box" and self.candidates != "boxes":
            raise ValueError("answer 'box' needs candidates 'boxes'")
        return self

    @property
    def target_styles(self) -> tuple[Style, ...]:
        """The four styles a selected record can be converted to (all but the original)."""
        return tuple(s for s in STYLES if s != self.original_style)

    def production(self, style: Style, distractors: Literal["model", "pool"] = "model") -> Production:
        """How a style is produced for this task: by rule, from data candidates, or by the model."""
        if style == self.original_style:
            return "original"
        if style == "short":
            return "rule"
        if style in ("brief", "detail"):
            return "model"
        if self.candidates != "model":
            return "data"
        return "data" if distractors == "pool" else "model"


COIN_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="ScienceQA",
        original_style="mcq",
        answer="option",
        candidates="options",
        instruction_lines=(MCQ_LETTER,),
        scorer="ScienceQA",
        style="letter",
        eval_appends=MCQ_LETTER,
    ),
    TaskSpec(name="TextVQA", instruction_lines=(SHORT_ANSWER,), scorer="TextVQA"),
    TaskSpec(name="ImageNet", candidates="classes", instruction_lines=(SHORT_ANSWER,), scorer="ImageNet"),
    TaskSpec(name="GQA", question_form="list", instruction_lines=(SHORT_ANSWER,), scorer="GQA"),
    TaskSpec(name="VizWiz", instruction_lines=(SHORT_ANSWER,), scorer="VizWiz"),
    TaskSpec(
        name="Grounding",
        answer="box",
        candidates="boxes",
        question_form="list",
        scorer="Grounding",
        style="box",
    ),
    TaskSpec(name="VQAv2", question_form="list", instruction_lines=(SHORT_ANSWER,), scorer="VQAv2"),
    TaskSpec(name="OCRVQA", question_form="list", instruction_lines=(SHORT_ANSWER,), scorer="OCRVQA"),
)

COIN_TASK_NAMES: tuple[str, ...] = tuple(t.name for t in COIN_TASKS)

_REGISTRY: dict[str, TaskSpec] = {t.name: t for t in COIN_TASKS}


class TaskError(InputError):
    pass


def coin_tasks() -> list[TaskSpec]:
    """The eight CoIN tasks in training order."""
    return list(COIN_TASKS)


def coin_task_name(name: str) -> str | None:
    """The CoIN task a name denotes, case-insensitively (`textvqa` -> `TextVQA`), or None."""
    return next((t for t in COIN_TASK_NAMES if t.lower() == name.lower()), None)


def in_coin_order(names: Iterable[str]) -> list[str]:
    """`names` with the CoIN tasks first, in training order, then the others sorted."""
    present = set(names)
    order = [t for t in COIN_TASK_NAMES if t in present]
    return order + sorted(present - set(order))


def get_task(name: str) -> TaskSpec:
    """A registered task by name, exact or else case-insensitive (CoIN built-ins plus those loaded from YAML).

    A data root's own tasks (`tasks.json`) are not here: `sefe.coin.root_tasks.find_task` looks there first.
    """
    spec = _REGISTRY.get(name) or next(
        (t for t in _REGISTRY.values() if t.name.lower() == name.lower()), None
    )
    if spec is None:
        known = ", ".join(_REGISTRY)
        msg = f"unknown task {name!r}; known: {known} (declare others in a YAML task file)"
        raise TaskError(msg)
    return spec


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add (or replace) a task in the registry."""
    _REGISTRY[spec.name] = spec
    return spec


def load_task_file(path: str | os.PathLike[str]) -> TaskSpec:
    """Read a YAML task declaration and register it; errors name the file and the field."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TaskError(f"{p}: cannot read task file: {e}") from e
    if not isinstance(data, dict):
        raise TaskError(f"{p}: a task file must be a YAML mapping")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "(task)"
        raise TaskError(f"{p}: field {field!r}: {first['msg']}") from None
    return register_task(spec)
