"""`replay`: experience replay: a seeded share of each earlier task's training records joins every later task.

On top of sequential LoRA (fresh LoRA per task, merged after it), so the comparison with `lora` isolates the
effect of replayed data. After task k its buffer is drawn once (seeded by the run seed and the task name,
independent of the other tasks) and stored by record index and id in `replay_buffer.json`, together with the
buffers of tasks 1..k-1: later stages train on exactly those records, resume reuses the file, and a change of
the earlier training file is detected instead of silently replaying other records.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field

from sefe.sefe_train.methods import register
from sefe.sefe_train.methods.base import LoRAMethod, MethodOptions, Record, StageContext

BUFFER_FILE = "replay_buffer.json"


class ReplayOptions(MethodOptions):
    share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of each earlier task's training records replayed in every later task. Our "
        "choice (5 percent); no paper fixes it for CoIN.",
    )
    min_per_task: int = Field(
        1, ge=0, description="At least this many records per earlier task when share > 0 (our choice)."
    )
    seed: int | None = Field(None, description="Seed of the buffer draws; None: train.seed.")


class TaskBuffer(BaseModel):
    """One earlier task's buffer: which records of which training file."""

    train_file: str  # relative to the data root when inside it (the run survives a moved data root)
    n_records: int
    indices: list[int]
    ids: list[Any]


def buffer_size(n: int, share: float, min_per_task: int) -> int:
    """round-half-up(share x n), at least `min_per_task` when share > 0, at most n."""
    if share <= 0 or n == 0:
        return 0
    return min(n, max(min_per_task, math.floor(share * n + 0.5)))


def draw_buffer(n: int, share: float, min_per_task: int, seed: int, task: str) -> list[int]:
    """Sorted record indices of task `task`'s buffer; depends only on (n, share, seed, task)."""
    rng = random.Random(f"sefe.replay/{seed}/{task}")
    return sorted(rng.sample(range(n), buffer_size(n, share, min_per_task)))


@register
class Replay(LoRAMethod[ReplayOptions]):
    name = "replay"
    summary = "sequential LoRA + a seeded share of every earlier task's training records mixed in"
    paper = "experience replay (Rolnick et al., NeurIPS 2019: CLEAR), the usual MCIT data baseline"
    kept_between_tasks = "the merged weights and the buffers' record indices and ids (replay_buffer.json)"
    options_cls = ReplayOptions

    def _seed(self) -> int:
        return self.cfg.train.seed if self.options.seed is None else self.options.seed

    def _relative(self, path: Path) -> str:
        root = self.cfg.resolved_data_root()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    def _resolve(self, train_file: str) -> Path:
        path = Path(train_file)
        return path if path.is_absolute() else self.cfg.resolved_data_root() / path

    def buffers(self, ctx: StageContext) -> dict[str, TaskBuffer]:
        """The buffers of tasks 1..k-1 (stage k-1's file); empty on stage 1."""
        path = self.earlier_stage_file(ctx, BUFFER_FILE)
        if path is None:
            return {}
        raw = orjson.loads(path.read_bytes())
        return {task: TaskBuffer.model_validate(b) for task, b in raw["buffers"].items()}

    def train_records(self, ctx: StageContext, records: list[Record]) -> list[Record]:
        from sefe.models.dataset import load_records

        mixed = list(records)
        for task, buf in self.buffers(ctx).items():
            path = self._resolve(buf.train_file)
            earlier = load_records(path)
            same = len(earlier) == buf.n_records and all(
                earlier[i].id == rid for i, rid in zip(buf.indices, buf.ids, strict=True)
            )
            if not same:
                raise ValueError(
                    f"{path}: task {task}'s training file changed since its replay buffer was drawn "
                    f"({buf.n_records} records then, {len(earlier)} now); replay needs the same file"
                )
            mixed.extend(earlier[i] for i in buf.indices)
        return mixed

    def stage_files(self, ctx: StageContext) -> list[str]:
        return [BUFFER_FILE]

    def after_task(self, ctx: StageContext, model: Any) -> None:
        """Draw this task's buffer and store it beside the earlier ones."""
        from sefe.atomic import atomic_write_bytes
        from sefe.models.dataset import load_records

        path = self.cfg.train_path(ctx.task)
        own = load_records(path)
        idx = draw_buffer(
            len(own), self.options.share, self.options.min_per_task, self._seed(), ctx.task.name
        )
        buffers = {t: b.model_dump(mode="json") for t, b in self.buffers(ctx).items()}
        buffers[ctx.task.name] = TaskBuffer(
            train_file=self._relative(path), n_records=len(own), indices=idx, ids=[own[i].id for i in idx]
        ).model_dump(mode="json")
        doc = {"share": self.options.share, "seed": self._seed(), "buffers": buffers}
        atomic_write_bytes(ctx.part / BUFFER_FILE, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
