"""Readers of the bundled coin-mini data root, for the data tests."""

from __future__ import annotations

import io
from typing import Any

import orjson
from PIL import Image

from sefe.data import coin_mini_root
from sefe.data.make_coin_mini import TASKS

ROOT = coin_mini_root()


def load(rel: str) -> Any:
    return orjson.loads((ROOT / rel).read_bytes())


def train(task: str) -> list[dict[str, Any]]:
    return load(f"annotations/{task}/train.json")


def test_records(task: str) -> list[dict[str, Any]]:
    return load(f"annotations/{task}/test.json")


test_records.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def image(rel: str) -> Image.Image:
    return Image.open(ROOT / rel).convert("RGB")


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def human_turns(rec: dict[str, Any]) -> list[str]:
    return [t["value"] for t in rec["conversations"] if t["from"] == "human"]


__all__ = ["TASKS", "decode", "human_turns", "image", "load", "test_records", "train"]
