"""An in-memory set of output files (relative path -> bytes), plus the CoIN text conventions shared by tasks.

Building everything in memory first keeps the generator a pure function of the seed: tests compare two
builds, or a build against the committed folder, without touching the disk.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
from PIL import Image

from sefe.data.mini_draw import encode, format_for


def dump_json(obj: Any) -> bytes:
    """Stable JSON bytes: two-space indent, keys in insertion order, trailing newline."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"


def task_rng(seed: int, name: str) -> random.Random:
    """An RNG per task (and per purpose) so changing one task never shifts another task's content."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def cap(answer: str) -> str:
    """LLaVA-style train answers start with a capital letter ("Red", "Yes"); test answers keep gt case."""
    return answer[:1].upper() + answer[1:]


def human(question: str, *instructions: str, image: bool = False) -> str:
    lines = (["<image>"] if image else []) + [question, *instructions]
    return "\n".join(lines)


def conversation(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for q, a in turns:
        out.append({"from": "human", "value": q})
        out.append({"from": "gpt", "value": a})
    return out


@dataclass
class TaskData:
    """What one task contributes: its train and test records, and the files (images, ground truth)."""

    name: str
    train: list[dict[str, Any]] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)

    def add_image(self, rel_path: str, img: Image.Image) -> str:
        if rel_path in self.files:
            raise ValueError(f"{self.name}: image {rel_path} generated twice")
        self.files[rel_path] = encode(img, format_for(rel_path))
        return rel_path

    def add_json(self, rel_path: str, obj: Any) -> None:
        self.files[rel_path] = dump_json(obj)
