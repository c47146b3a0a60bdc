"""Any OpenAI-compatible chat endpoint (OpenAI, `vllm serve`, llama.cpp server, ...) through AsyncOpenAI.

Every request carries a strict `json_schema` response format, so a server with structured decoding can only
produce the expected shape. Transport retries (429 honouring `retry-after`, 5xx, timeouts, dropped
connections, with exponential backoff) are the SDK's own; the number taken is read back per request. What
still fails after them is *not answered* (`ChatResult.unanswered`: the request stays open for the next run)
except a 400 / 413 / 422, which rejects this request itself. `check()` lists the served models before the
first request, so a dead port or a model the server does not serve fails in a second. The asyncio loop lives
inside `run`, so callers stay synchronous. The API key comes from `OPENAI_API_KEY` and is
handed to the SDK only: it is never logged or stored.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from sefe.asd_gen.backends.base import (
    Backend,
    BackendConfigError,
    BackendUnreachable,
    ChatRequest,
    ChatResult,
    ResultCallback,
    safe_url,
)
from sefe.asd_gen.needs import GenerationOptions
from sefe.errors import MissingDependency, UnavailableError

_RETRIED = {408, 409, 429, 500, 502, 503, 504}
_REJECTED = {400, 413, 422}  # the request itself is refused: quarantined, not retried by a rerun
CHECK_TIMEOUT_S = 10.0
_LOCAL_KEY = "sk-no-key"  # servers such as `vllm serve` without --api-key accept any key


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            "the openai backend needs the openai package: pip install 'sefe[openai]'"
        ) from e
    return openai


def _import_http() -> Any:
    """The HTTP library under the SDK (raw responses, connection limits): httpx2 in openai 3, httpx before."""
    try:
        import httpx2

        return httpx2
    except ImportError:  # pragma: no cover - openai 2.x
        import httpx

        return httpx


def _api_key(base_url: str | None) -> str:
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if base_url:
        return _LOCAL_KEY
    raise UnavailableError(
        "the openai backend needs OPENAI_API_KEY in the environment (or --base-url for a local server)"
    )


def response_format(req: ChatRequest) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": req.schema_name, "schema": req.json_schema, "strict": True},
    }


def chat_body(req: ChatRequest, model: str) -> dict[str, Any]:
    """The chat-completions request body (shared with the batch backend's JSONL lines)."""
    return {
        "model": model,
        "messages": req.messages,
        "max_completion_tokens": req.max_tokens,
        "temperature": req.temperature,
        "response_format": response_format(req),
    }


def result_from_completion(key: str, body: dict[str, Any], attempts: int = 1) -> ChatResult:
    """A chat.completion JSON body -> ChatResult (shared with the batch backend's output ingestion)."""
    try:
        choice = body["choices"][0]
        text = choice["message"].get("content")
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ChatResult(key=key, error="response has no choices[0].message", attempts=attempts)
    usage = body.get("usage") or {}
    return ChatResult(
        key=key,
        text=text,
        finish_reason=finish,
        tokens_in=int(usage.get("prompt_tokens") or 0),
        tokens_out=int(usage.get("completion_tokens") or 0),
        attempts=attempts,
        error=None if text is not None else "response content is empty",
    )


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, options: GenerationOptions) -> None:
        self._openai = _import_openai()
        self._http = _import_http()
        self._ssl: Any = None
        self.options = options
        self._model = options.model

    @property
    def model_name(self) -> str:
        """The named model, or the first one the server lists (what `vllm serve` serves)."""
        if self._model is None:
            models = self._served_models()
            if not models:
                raise BackendConfigError(f"{self._where()}: the server lists no models; pass --model")
            self._model = models[0]
        return self._model

    def _where(self) -> str:
        return safe_url(self.options.base_url) or "the OpenAI API"

    def _served_models(self) -> list[str]:
        """`GET /models` through the SDK (no retry, short timeout); errors become one-line messages."""
        oa = self._openai
        client = oa.OpenAI(
            base_url=self.options.base_url,
            api_key=_api_key(self.options.base_url),
            timeout=min(self.options.request_timeout_s, CHECK_TIMEOUT_S),
            max_retries=0,  # a refused connection is final here: a dead server must cost a second
        )
        try:
            return [m.id for m in client.models.list()]
        except (oa.APIConnectionError, oa.APITimeoutError) as e:
            detail = _short(str(e.__cause__ or e), 120)  # the SDK's own text is just "Connection error."
            raise BackendUnreachable(f"{self._where()}: cannot reach the model server ({detail})") from None
        except (oa.AuthenticationError, oa.PermissionDeniedError) as e:
            raise BackendConfigError(
                f"{self._where()}: the server rejected the API key (HTTP {e.status_code}); set OPENAI_API_KEY"
            ) from None
        except oa.APIStatusError as e:
            if e.status_code >= 500 or e.status_code == 429:
                raise BackendUnreachable(
                    f"{self._where()}: the model server answers HTTP {e.status_code}; try again later"
                ) from None
            return []  # no usable /models route (some servers lack it): nothing to check against
        finally:
            client.close()

    def check(self) -> None:
        """Fail fast: the server answers and serves the named model (else it names what it serves)."""
        models = self._served_models()
        if self._model is None:
            if not models:
                raise BackendConfigError(f"{self._where()}: the server lists no models; pass --model")
            self._model = models[0]
        elif models and self._model not in models:
            shown = ", ".join(models[:8]) + (", ..." if len(models) > 8 else "")
            raise BackendConfigError(
                f"{self._where()}: model {self._model!r} is not served here (it serves: {shown})"
            )

    def run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        if not requests:
            return
        model = self.model_name
        try:
            asyncio.run(self._run_all(model, requests, on_result))
        except BaseExceptionGroup as eg:  # TaskGroup wraps the first failure: re-raise it as it was
            raise eg.exceptions[0] from None

    async def _run_all(self, model: str, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        opts = self.options
        workers = max(1, min(opts.concurrency, len(requests)))
        # one idle connection kept per worker (the SDK keeps 100): high concurrency never reconnects
        limits = self._http.Limits(max_connections=max(workers, 100), max_keepalive_connections=workers)
        if self._ssl is None:  # built once per backend: loading the CA bundle costs ~40 ms of CPU per client
            self._ssl = self._http.create_ssl_context()
        http = self._openai.DefaultAsyncHttpxClient(limits=limits, verify=self._ssl)
        client = self._openai.AsyncOpenAI(
            base_url=opts.base_url,
            api_key=_api_key(opts.base_url),
            timeout=opts.request_timeout_s,
            max_retries=opts.max_retries,
            http_client=http,
        )
        todo: Iterator[ChatRequest] = iter(requests)

        async def worker() -> None:
            for req in todo:  # shared iterator: each request is taken by exactly one worker
                if self.stopping:
                    return  # breaker or Ctrl-C: start nothing new; in-flight requests still report
                on_result(await self._one(client, model, req))

        try:
            async with asyncio.TaskGroup() as tg:  # a callback error (or Ctrl-C) cancels the other workers
                for _ in range(workers):
                    tg.create_task(worker())
        finally:
            await client.close()

    async def _one(self, client: Any, model: str, req: ChatRequest) -> ChatResult:
        """One request through the SDK's generic `post` (its retries, auth and errors, without re-validating
        our already-built body against its TypedDicts: that walk cost several ms of CPU per request)."""
        oa = self._openai
        body = chat_body(req, model)
        try:
            resp = await client.post(
                "/chat/completions",
                cast_to=self._http.Response,
                content=orjson.dumps(body),
                options={"headers": {"Content-Type": "application/json"}},
            )
            data = orjson.loads(resp.content)
        except oa.APIStatusError as e:
            tries = self._tries() if e.status_code in _RETRIED else 1
            return ChatResult(
                key=req.key,
                error=f"HTTP {e.status_code}: {_short(e.message)}",
                attempts=tries,
                unanswered=e.status_code not in _REJECTED,
            )
        except oa.APITimeoutError:
            return ChatResult(key=req.key, error="timed out", attempts=self._tries(), unanswered=True)
        except oa.APIConnectionError as e:
            return ChatResult(
                key=req.key,
                error=f"connection error: {_short(str(e))}",
                attempts=self._tries(),
                unanswered=True,
            )
        except orjson.JSONDecodeError as e:  # a proxy's error page, a half-sent body: nobody answered
            return ChatResult(key=req.key, error=f"response is not JSON: {e}", unanswered=True)
        retries = resp.request.headers.get("x-stainless-retry-count", "0")
        return result_from_completion(req.key, data, attempts=1 + int(retries))

    def _tries(self) -> int:
        return 1 + self.options.max_retries


def _short(msg: str, limit: int = 300) -> str:
    return msg if len(msg) <= limit else msg[:limit] + "..."
