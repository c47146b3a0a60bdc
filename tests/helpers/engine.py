"""Needs and options for the generation-engine tests (the loopback server is `tests.helpers.chat_server`)."""

from __future__ import annotations

from pathlib import Path

from sefe.asd_gen.needs import GenerationOptions, Need, NeedKind, QAItem
from tests.helpers.chat_server import ChatServer


def need(record_id: str, kind: NeedKind = "mcq", n: int = 1, task: str = "GQA", tag: str = "") -> Need:
    """A Need with distinct question text per record (the server counts requests per prompt text)."""
    items = [
        QAItem(question=f"What colour is object {i} in record {record_id}?{tag}", answer=f"red{i}")
        for i in range(n)
    ]
    return Need(task=task, record_id=record_id, kind=kind, items=items)


def openai_options(srv: ChatServer, **kw: object) -> GenerationOptions:
    base = {"backend": "openai", "base_url": srv.base_url, "concurrency": 8, "max_retries": 2}
    base.update(kw)
    return GenerationOptions(**base)  # type: ignore[arg-type]


def openai_build_args(data: Path, out: Path, url: str) -> list[str]:
    """`sefe asd build` arguments (after `sefe`) for a data root against an OpenAI-compatible server."""
    return [
        "asd",
        "build",
        "--data-root",
        str(data),
        "--out",
        str(out),
        "--backend",
        "openai",
        "--base-url",
        url,
    ]
