"""The progress bar of hand-written loops (warm start, its vision stage, inference).

Why in the ground floor: training, evaluation and Micro-CoIN all run such loops; one column list keeps their
bars alike, and none of them should import another's package for it.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def step_bar(console: Console | None = None, transient: bool = True, disable: bool = False) -> Progress:
    """The bar of a hand-written loop (warm start, evaluation): description, bar, i/N, time left."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=transient, disable=disable)
