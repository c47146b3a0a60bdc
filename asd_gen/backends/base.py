"""The backend interface: send chat requests, hand every finished result to a callback as soon as it exists.

Backends know nothing about tasks or styles: the engine renders prompts into `ChatRequest`s, and stores each
`ChatResult` in the cache from the callback, so a crash loses at most what was in flight (one chunk for
offline engines).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str  # request fingerprint (also the Batch API custom_id)
    # OpenAI chat format; images as {"type": "image_url", "image_url": {"url": data-URL}}
    messages: list[dict[str, Any]]
    json_schema: dict[str, Any]  # strict JSON schema of the expected answer (additionalProperties: false)
    schema_name: str
    max_tokens: int = 512
    temperature: float = 0.0
    image_path: str | None = None  # absolute path, for in-process backends that load images themselves


class ChatResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    text: str | None = None  # raw model text (None on error)
    error: str | None = None  # transport/protocol error after the backend's own retries
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 1
    extra: dict[str, Any] = Field(default_factory=dict)


ResultCallback = Callable[[ChatResult], None]


class Backend(ABC):
    """One way of running requests. Subclasses live one per file and register in `factory`."""

    name: str = "base"

    @abstractmethod
    def run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        """Run all requests, calling `on_result` once per request (success or final error), in any order."""

    @property
    @abstractmethod
    def model_name(self) -> str:
        """The model identity recorded in fingerprints and the manifest."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engines, sessions or threads."""
