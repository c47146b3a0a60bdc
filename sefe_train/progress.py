"""Training telemetry on the main process: a rich progress bar, and the Trainer's logs in a JSONL file.

Why: a continual run is several Trainer runs in a row; one bar per stage with loss, penalty and learning rate
reads better than interleaved tqdm lines and printed dicts. The JSONL log (`<stage>/train_log.jsonl`) outlives
the Trainer checkpoints, which are deleted when a stage is done, so reports can plot loss and penalty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import TrainerCallback

from sefe.progress import LogLines


class RichProgressCallback(TrainerCallback):
    """Shows `stage k Task: step i/N  loss ...  penalty ...  lr ...` while a stage trains."""

    def __init__(self, label: str, console: Console | None = None) -> None:
        self.label = label
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None
        self.last: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        # a log (not a terminal) gets a line at every tenth of the stage: a live bar shows nothing there
        live = self.console.is_terminal
        self.progress = (
            Progress(*columns, console=self.console) if live else LogLines(*columns, console=self.console)
        )
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, description=self._describe())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        for key in ("loss", "reglora_penalty", "learning_rate", "train_loss"):
            if key in logs:
                self.last[key] = float(logs[key])
        self.progress.update(self.task, description=self._describe())

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, description=self._describe())
        self.close()

    def close(self) -> None:
        """Stop the live display (also called by the runner when training raised)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _describe(self) -> str:
        parts = [self.label]
        if "loss" in self.last:
            parts.append(f"loss {self.last['loss']:.4f}")
        if "reglora_penalty" in self.last:
            parts.append(f"penalty {self.last['reglora_penalty']:.3g}")
        return "  ".join(parts)


class JsonlLogCallback(TrainerCallback):
    """Appends every Trainer log (with its step) to a JSONL file, flushed per line; resume appends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
            fh.flush()
