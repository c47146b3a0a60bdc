"""The run folder: fixed names, `state.json`, and atomic writes (see docs/RUN_LAYOUT.md).

Why atomic everything: a continual run is killed sooner or later. A stage is built in `<k>_<Task>.partial/`;
each artefact inside it appears under its final name only once complete (`sefe.atomic`: temp name, then
one rename); the stage folder is renamed to `<k>_<Task>/` when everything is there, and `state.json` is
written last. So a folder under a final name is always complete, and rerunning the same command resumes
where the kill hit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field

from sefe.atomic import atomic_write_bytes
from sefe.errors import InputError

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
KEYS_FILE = "keys.safetensors"
CHECKPOINTS_DIR = "checkpoints"
EVAL_DIR = "eval"
TRAIN_LOG = "train_log.jsonl"
PARTIAL_SUFFIX = ".partial"


class StageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int  # 1-based stage number k
    task: str
    finished_at: str
    train_metrics: dict[str, float] = Field(default_factory=dict)


class RunState(BaseModel):
    """Which stages are done. Written atomically after a stage folder got its final name."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    method: str
    tasks: list[str]
    done: list[StageRecord] = Field(default_factory=list)

    def is_done(self, index: int) -> bool:
        return any(s.index == index for s in self.done)

    def mark_done(self, index: int, task: str, metrics: dict[str, float] | None = None) -> None:
        self.done = [s for s in self.done if s.index != index]
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.done.append(StageRecord(index=index, task=task, finished_at=stamp, train_metrics=metrics or {}))
        self.done.sort(key=lambda s: s.index)


def stage_name(index: int, task: str) -> str:
    return f"{index}_{task}"


def stage_dir(run: Path, index: int, task: str) -> Path:
    return run / stage_name(index, task)


def partial_dir(run: Path, index: int, task: str) -> Path:
    return run / (stage_name(index, task) + PARTIAL_SUFFIX)


def load_state(run: Path) -> RunState | None:
    path = run / STATE_FILE
    if not path.exists():
        return None
    try:
        return RunState.model_validate(orjson.loads(path.read_bytes()))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise InputError(f"{path}: unreadable run state ({exc}); fix or delete it to restart") from exc


def save_state(run: Path, state: RunState) -> None:
    atomic_write_bytes(
        run / STATE_FILE, orjson.dumps(state.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    )
