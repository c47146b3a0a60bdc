"""Test records in the CoIN formats, for the scoring tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def short_records(pairs: Iterable[tuple[Any, str]]) -> list[dict[str, Any]]:
    """Test records with a short answer each."""
    return [
        {
            "question_id": q,
            "image": f"X/{q}.jpg",
            "text": "Q?\nAnswer the question using a single word or phrase.",
            "answer": a,
        }
        for q, a in pairs
    ]
