"""Tasks a data root declares for itself in `<root>/tasks.json` (Micro-CoIN writes one).

Why: a run, an ASD build or a scoring command opened on such a root must know, without extra flags, how each
of its tasks is treated: its ASD declaration (a `TaskSpec`), the CoIN scorer that scores it, and its answer
style for the format checks. `register_root(root)` reads the file (if any) and registers all three; it is
idempotent and cheap, so every entry point calls it.

    {"tasks": [{"name": "Colour", "style": "short", "scorer": "VQAv2",
                "asd": {"name": "Colour", "candidates": "classes", ...}}, ...]}
"""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from sefe.coin.tasks import TaskName
from sefe.errors import InputError

TASKS_FILE = "tasks.json"


class RootTaskError(InputError):
    """A `tasks.json` that cannot be used; the message names the file and the field."""


class RootTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TaskName
    style: str
    scorer: str
    asd: dict[str, object]


class RootTasks(BaseModel):
    model_config = ConfigDict(extra="allow")

    tasks: list[RootTask]


def read_root_tasks(root: Path) -> list[RootTask]:
    path = Path(root) / TASKS_FILE
    if not path.is_file():
        return []
    try:
        return RootTasks.model_validate(orjson.loads(path.read_bytes())).tasks
    except orjson.JSONDecodeError as exc:
        raise RootTaskError(f"{path}: broken JSON ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise RootTaskError(f"{path}: field {loc!r}: {first['msg']}") from None


def register_root(root: Path | str | None) -> list[str]:
    """Register the tasks `<root>/tasks.json` declares; returns their names ([] when there is no file)."""
    if root is None:
        return []
    from sefe.coin.tasks import TaskSpec, register_task
    from sefe.evaluation.format_checks import register_task_style
    from sefe.evaluation.scorers import register_scorer_alias

    path = Path(root) / TASKS_FILE
    names = []
    for i, t in enumerate(read_root_tasks(Path(root))):
        try:
            register_task(TaskSpec.model_validate(t.asd))
            register_scorer_alias(t.name, t.scorer)
            register_task_style(t.name, t.style)  # type: ignore[arg-type]
        except (ValidationError, ValueError) as exc:
            raise RootTaskError(f"{path}: tasks[{i}] ({t.name}): {exc}") from None
        names.append(t.name)
    return names
