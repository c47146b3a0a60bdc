"""The progress bar of hand-written loops (warm start, its vision stage, inference).

Why in the ground floor: training, evaluation and Micro-CoIN all run such loops; one column list keeps their
bars alike, and none of them should import another's package for it. A console that is not a terminal (output
sent to a log) gets plain lines instead, one at every tenth of a task: a live bar prints nothing there, and a
350-second warm start looked hung.
"""

from __future__ import annotations

from typing import Any

from rich import get_console
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class LogLines(Progress):
    """A `Progress` for logs: no live display; a line `description: i/N (s elapsed)` at every tenth."""

    def __init__(self, *columns: Any, console: Console, **kwargs: Any) -> None:
        super().__init__(*columns, console=console, disable=True, **kwargs)
        self._out = console
        self._tenths: dict[TaskID, int] = {}

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def _report(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        if not task.total:
            return
        tenth = int(10 * task.completed / task.total)
        if tenth > self._tenths.get(task_id, 0):
            self._tenths[task_id] = tenth
            elapsed = task.elapsed or 0.0
            self._out.print(f"{task.description}: {task.completed:.0f}/{task.total:.0f} ({elapsed:.0f} s)")


def step_bar(console: Console | None = None, transient: bool = True, disable: bool = False) -> Progress:
    """The bar of a hand-written loop (warm start, evaluation): description, bar, i/N, time left; plain lines
    at every tenth when the console is not a terminal."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    target = console or get_console()
    if not disable and not target.is_terminal:
        return LogLines(*columns, console=target, transient=transient)
    return Progress(*columns, console=console, transient=transient, disable=disable)
