"""Tasks a data root declares for itself in `<root>/tasks.json` (Micro-CoIN writes one), found by lookup.

Why: a run, an ASD build or a scoring command opened on such a root must know, without extra flags, how each
of its tasks is treated: its `TaskSpec` (ASD declaration, CoIN scorer, answer style). Nothing is registered:
every consumer that knows its data root asks `find_task(name, root)`, which reads the root's `tasks.json`
(parsed once per version of the file) and answers from it first, then from the CoIN and YAML tasks
(`sefe.coin.tasks`). No entry point has to remember a registration call, and two roots opened in one process
do not see each other's tasks.

    {"tasks": [{"name": "Colour", "style": "short", "scorer": "VQAv2",
                "asd": {"name": "Colour", "candidates": "classes", ...}}, ...]}

An entry's `asd` object holds the other `TaskSpec` fields; `style` and `scorer` sit beside it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from sefe.coin import layout
from sefe.coin.tasks import TaskError, TaskName, TaskSpec, get_task
from sefe.errors import InputError


class RootTaskError(InputError):
    """A `tasks.json` that cannot be used; the message names the file and the field."""


class RootTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: TaskName
    style: str
    scorer: str
    asd: dict[str, object]


class RootTasks(BaseModel):
    model_config = ConfigDict(extra="allow")  # the generator's own facts (seed, sizes) ride along

    tasks: list[RootTask]


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(task)"
    return f"field {prefix + loc!r}: {first['msg']}"


def root_tasks(root: Path | str | None) -> tuple[TaskSpec, ...]:
    """The tasks `<root>/tasks.json` declares, in file order (none without a root or without the file)."""
    if root is None:
        return ()
    path = layout.tasks_file(Path(root))
    if not path.is_file():
        return ()
    stat = path.stat()
    return _read(path.resolve(), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _read(path: Path, mtime_ns: int, size: int) -> tuple[TaskSpec, ...]:
    """Parsed once per version of the file: its mtime and size are part of the cache key."""
    try:
        declared = RootTasks.model_validate(orjson.loads(path.read_bytes())).tasks
    except orjson.JSONDecodeError as exc:
        raise RootTaskError(f"{path}: broken JSON ({exc})") from None
    except ValidationError as exc:
        raise RootTaskError(f"{path}: {_first_error(exc)}") from None
    specs: list[TaskSpec] = []
    for i, t in enumerate(declared):
        where = f"{path}: tasks[{i}] ({t.name})"
        if t.asd.get("name", t.name) != t.name:
            raise RootTaskError(f"{where}: field 'asd.name' {t.asd['name']!r} differs from the task's name")
        if any(s.name.lower() == t.name.lower() for s in specs):
            raise RootTaskError(f"{where}: the task is declared twice")
        try:
            specs.append(
                TaskSpec.model_validate({**t.asd, "name": t.name, "style": t.style, "scorer": t.scorer})
            )
        except ValidationError as exc:
            loc = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
            raise RootTaskError(
                f"{where}: {_first_error(exc, '' if loc in RootTask.model_fields else 'asd.')}"
            ) from None
    return tuple(specs)


def find_task(name: str, root: Path | str | None = None) -> TaskSpec:
    """The task `name` means on `root`: the root's own declaration first (exact name, then any case), then the
    CoIN and YAML tasks (`get_task`)."""
    own = root_tasks(root)
    spec = next((t for t in own if t.name == name), None) or next(
        (t for t in own if t.name.lower() == name.lower()), None
    )
    if spec is not None:
        return spec
    try:
        return get_task(name)
    except TaskError as exc:
        if root is None:
            raise
        declared = ", ".join(t.name for t in own) or "none"
        raise TaskError(f"{exc}; {layout.tasks_file(Path(root))} declares: {declared}") from None
