"""Helpers for the scoring tests: write prediction JSONL and test.json files in the CoIN formats."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest


@pytest.fixture
def write_preds(tmp_path: Path) -> Callable[..., Path]:
    """Write a prediction JSONL: items are (question_id, text) pairs, in file order."""

    def _write(items: Iterable[tuple[Any, str]], name: str = "preds.jsonl") -> Path:
        path = tmp_path / name
        lines = [
            orjson.dumps(
                {
                    "question_id": q,
                    "prompt": "?",
                    "text": t,
                    "answer_id": f"a{n}",
                    "model_id": "m",
                    "metadata": {},
                }
            )
            for n, (q, t) in enumerate(items)
        ]
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path

    return _write


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], Path]:
    def _write(name: str, data: Any) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(data))
        return path

    return _write
