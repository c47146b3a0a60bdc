"""Shared by the backend tests: strict schemas like the engine's, request builders, result collection."""

from __future__ import annotations

from typing import Any

from sefe.asd_gen.backends.base import ChatRequest, ChatResult


def string(max_length: int = 24) -> dict[str, Any]:
    """Bounded strings keep the test fast: a 135M model can otherwise ramble until max_tokens."""
    return {"type": "string", "maxLength": max_length}


def obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def arr(item: dict[str, Any], n: int) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": n, "maxItems": n}


# Strict shapes as the engine sends them (object root, exact array lengths, no extra keys).
MCQ_TWO_QUESTIONS = obj({"items": arr(obj({"distractors": arr(string(), 3)}), 2)})
YN_ONE = obj({"items": arr(obj({"distractor": string()}), 1)})
BRIEF_ONE = obj({"items": arr(obj({"explanation": string(100)}), 1)})
OFFICIAL_SINGLE_MCQ = obj({"distractor_options": arr(string(), 3)})

SYSTEM = "You write quiz material. Reply with JSON only."


def request(
    key: str,
    text: str,
    schema: dict[str, Any],
    *,
    max_tokens: int = 96,
    image_url: str | None = None,
    image_path: str | None = None,
) -> ChatRequest:
    content: list[dict[str, Any]] = []
    if image_url is not None:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    content.append({"type": "text", "text": text})
    return ChatRequest(
        key=key,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}],
        json_schema=schema,
        schema_name="test",
        max_tokens=max_tokens,
        image_path=image_path,
    )


def collect(backend: Any, requests: list[ChatRequest]) -> dict[str, ChatResult]:
    """Run and index results by key, asserting one callback per request."""
    got: list[ChatResult] = []
    backend.run(requests, got.append)
    keys = [r.key for r in got]
    assert sorted(keys) == sorted(r.key for r in requests), keys
    return {r.key: r for r in got}
