"""A data root that declares its own tasks in `tasks.json` (as Micro-CoIN's generator writes one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def declare(root: Path, *tasks: dict[str, Any]) -> Path:
    """Write `<root>/tasks.json`; each task is `{name, style, scorer, asd}` (`asd` default: the name only)."""
    entries = [{"asd": {"name": t["name"]}, **t} for t in tasks]
    root.mkdir(parents=True, exist_ok=True)
    (root / "tasks.json").write_bytes(orjson.dumps({"tasks": entries}))
    return root
