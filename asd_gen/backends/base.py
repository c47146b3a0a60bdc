"""The backend interface: send chat requests, hand every finished result to a callback as soon as it exists.

Backends know nothing about tasks or styles: the engine renders prompts into `ChatRequest`s, and stores each
`ChatResult` in the cache from the callback, so a crash loses at most what was in flight (one chunk for
offline engines).

Two kinds of error result, kept apart because they call for opposite handling:
- *not answered* (`unanswered=True`): the server or engine gave no answer (connection refused or reset,
  timeout, 5xx / 429 after the SDK's retries, a crashed engine, out of memory, a batch not returned yet).
  Not the model's fault: the request stays open and the next run asks it again.
- *rejected or invalid* (`unanswered=False`): the request was answered with an error about this request, or
  the output is unusable. After the engine's retries it goes to the quarantine.
Backends stop early on `request_stop()` (Ctrl-C, the engine's circuit breaker): requests not started then get
no result at all, and in-flight ones still report theirs.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from sefe.errors import UnavailableError, Unreachable


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
    unanswered: bool = False  # with `error`: nobody answered (transport, crash, pending): ask again next run
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 1
    extra: dict[str, Any] = Field(default_factory=dict)


ResultCallback = Callable[[ChatResult], None]


class Backend(ABC):
    """One way of running requests. Subclasses live one per file and register in `factory`."""

    name: str = "base"
    _stop: threading.Event | None = None

    @property
    def stopping(self) -> bool:
        """True once `request_stop()` was called: send nothing new, let in-flight requests finish."""
        return self._stop is not None and self._stop.is_set()

    def request_stop(self) -> None:
        """Ask a running `run` to start no more requests (safe from signal handlers and other threads)."""
        if self._stop is None:
            self._stop = threading.Event()
        self._stop.set()

    def reset_stop(self) -> None:
        if self._stop is not None:
            self._stop.clear()

    def check(self) -> None:  # noqa: B027 - optional hook
        """Fail fast, before the first request, when the backend cannot answer at all (raise
        `BackendUnreachable` when the endpoint is down, `BackendConfigError` when it does not serve the
        model). Called once per run, only when something is to be sent."""

    @abstractmethod
    def run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        """Run all requests, calling `on_result` once per request (success or final error), in any order;
        after `request_stop()`, requests not yet started are skipped (no result)."""

    @property
    @abstractmethod
    def model_name(self) -> str:
        """The model identity recorded in fingerprints and the manifest."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engines, sessions or threads."""


class BackendUnreachable(Unreachable):
    """The server or engine cannot be reached at all (checked before the first request): exit code 4."""


class BackendConfigError(UnavailableError):
    """The endpoint answers but cannot serve this run (model not served, key rejected): fix the command."""


def safe_url(url: str | None) -> str | None:
    """The URL without user:password, query or fragment: fit for messages and manifests."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
