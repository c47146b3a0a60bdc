"""`local`: an in-process transformers model with grammar-constrained JSON (the embedded default backend).

Why it exists: ASD must run on a laptop with no server and no API key. The default model is the embedded
SmolLM2-135M-Instruct (see `embedded.py`); `--model` names any local transformers model folder (or a `.gguf`
file), including image-text models, which get the record's image. Text-only models get the question without
the image. An image-text model of a family sefe knows (Qwen2.5-VL, InternVL, ...) is loaded and prompted by
that family's code, injected as a `ChatInputs` (see `chat_inputs.py`): the command layer passes it in. Every
output is constrained by llguidance to the request's JSON schema, so it always parses unless
cut by `max_tokens` (finish reason "length").

Decoding is greedy (sampling when a request asks for temperature > 0), batched with left padding; `on_result`
is called for every request of a batch as soon as that batch is done. Measured with the embedded model on 2
shared CPU cores, 16 requests of ~25 output tokens: one thread, batch 1: 13 tok/s, batch 8: 40 tok/s; two
threads, lightly loaded, batch 4: 46 tok/s, batch 8: 67 tok/s. With other jobs on the same cores, torch's own
thread pool collapses for batched matmuls (batch 4: 1.4 tok/s), so `SEFE_LOCAL_THREADS=1` is the setting for a
busy machine; by default torch picks its thread count.

A batch that fails is rerun row by row. A row that fails on its input (`ValueError`, `OSError`) is rejected
(quarantined); one that fails in the model (`RuntimeError`, out of memory) is *not answered* and stays open
for the next run. `request_stop()` takes effect between batches.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sefe.asd_gen.backends import embedded
from sefe.asd_gen.backends.base import Backend, ChatRequest, ChatResult, ResultCallback
from sefe.asd_gen.backends.chat_inputs import ChatInputs
from sefe.asd_gen.backends.json_constraint import (
    GrammarError,
    JsonLogitsProcessor,
    build_llg_tokenizer,
    compile_schema,
    new_matcher,
)
from sefe.asd_gen.needs import GenerationOptions
from sefe.errors import UnavailableError, reading

# Rows per generate() call (capped by --concurrency). On CPU the gain flattens beyond 8 and padding grows.
DEFAULT_BATCH_SIZE = 8


class LocalModelError(UnavailableError):
    """The model named with --model cannot be used by the local backend."""


@dataclass
class _Loaded:
    """Everything loaded once per backend."""

    model: Any
    tokenizer: Any  # the text tokenizer (the processor's, for image-text models)
    processor: Any | None  # AutoProcessor for image-text models, else None
    llg_tokenizer: Any
    vocab_size: int
    eos_ids: list[int]
    pad_id: int
    grammars: dict[str, str | GrammarError] = field(default_factory=dict)  # schema JSON -> grammar or error


@dataclass
class _Prepared:
    """One request turned into model input text (and its image), ready to batch."""

    request: ChatRequest
    text: str
    image: Any | None  # PIL image for image-text models


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Use n torch threads for the duration of a run, then give the process its setting back."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _eos_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def _text_parts(content: Any) -> str:
    """The text of an OpenAI message content (string or list of parts), image parts dropped."""
    if isinstance(content, str):
        return content
    texts = [p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(t for t in texts if t)


def _has_image(messages: Sequence[dict[str, Any]]) -> bool:
    return any(
        isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
        for m in messages
    )


def _load_image(request: ChatRequest) -> Any:
    """The request's image: from `image_path`, else decoded from its data-URL part."""
    from PIL import Image

    if request.image_path:
        with Image.open(request.image_path) as im:
            return im.convert("RGB")
    for m in request.messages:
        content = m.get("content")
        for p in content if isinstance(content, list) else []:
            if isinstance(p, dict) and p.get("type") == "image_url":
                url = str(p.get("image_url", {}).get("url", ""))
                if url.startswith("data:") and "," in url:
                    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
                        return im.convert("RGB")
                raise ValueError(f"request {request.key}: image_url is not a data URL and no image_path")
    raise ValueError(f"request {request.key}: no image found")


def _vlm_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI parts -> processor chat-template parts (`{"type": "image"}` placeholders)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            parts: list[dict[str, Any]] = [{"type": "text", "text": content}]
        else:
            parts = []
            for p in content or []:
                if p.get("type") == "image_url":
                    parts.append({"type": "image"})
                elif p.get("type") == "text":
                    parts.append({"type": "text", "text": p.get("text", "")})
        out.append({"role": m["role"], "content": parts})
    return out


class LocalBackend(Backend):
    """transformers + llguidance in this process. The model is loaded on first use and kept."""

    name = "local"

    def __init__(
        self,
        options: GenerationOptions,
        *,
        batch_size: int | None = None,
        threads: int | None = None,
        chat_inputs: ChatInputs | None = None,
    ) -> None:
        self.options = options
        self.chat_inputs = chat_inputs  # a model family's loading and prompting, for its folders
        self.batch_size = max(1, batch_size or min(options.concurrency, DEFAULT_BATCH_SIZE))
        env_threads = os.environ.get("SEFE_LOCAL_THREADS")
        self.threads = threads or (int(env_threads) if env_threads else None)
        self._source = self._resolve(options.model)
        self._loaded: _Loaded | None = None

    # ---- model identity and loading ----------------------------------------------------------------
    @staticmethod
    def _resolve(model: str | None) -> Path | None:
        """None for the embedded model, else an existing folder or .gguf file (no downloads here)."""
        if model is None:
            embedded.embedded_gguf()  # fail early, with the install hint, if the package is missing
            return None
        path = Path(model).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return path.resolve()
        if path.is_file() and path.suffix == ".gguf":
            return path.resolve()
        raise LocalModelError(
            f"--model {model!r}: the local backend needs a transformers model folder (with config.json) "
            "or a .gguf file on this machine; for a hosted model use --backend openai or vllm."
        )

    @property
    def model_name(self) -> str:
        """Stable across machines: the embedded name, or the folder name plus a hash of its config."""
        if self._source is None:
            return embedded.EMBEDDED_MODEL_NAME
        if self._source.is_file():
            return f"{self._source.stem}-{self._source.stat().st_size}"
        digest = hashlib.sha256((self._source / "config.json").read_bytes()).hexdigest()[:8]
        return f"{self._source.name}-{digest}"

    def _load(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        from safetensors import SafetensorError
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        processor = None
        source = self._source or embedded.dequantised_folder()
        with reading(source, "model", (OSError, ValueError, SafetensorError)):
            if self.chat_inputs is not None and source.is_dir():  # a family's folder: its own code
                folder = str(source)
                model, tokenizer = self.chat_inputs.load(source)
            elif source.is_file():  # a GGUF file named with --model
                folder, kw = str(source.parent), {"gguf_file": source.name}
                tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
                model = AutoModelForCausalLM.from_pretrained(folder, **kw)
            else:
                folder = str(source)
                config = AutoConfig.from_pretrained(folder)
                if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
                    processor = AutoProcessor.from_pretrained(folder)
                    tokenizer = processor.tokenizer
                    model = AutoModelForImageTextToText.from_pretrained(folder)
                else:
                    tokenizer = AutoTokenizer.from_pretrained(folder)
                    model = AutoModelForCausalLM.from_pretrained(folder)
        model.eval()
        tokenizer.padding_side = "left"
        if (
            self.chat_inputs is None
            and getattr(tokenizer, "chat_template", None) is None
            and not (processor is not None and getattr(processor, "chat_template", None))
        ):
            raise LocalModelError(f"model {folder}: its tokenizer has no chat template")
        eos_ids = _eos_list(getattr(model.generation_config, "eos_token_id", None)) or _eos_list(
            tokenizer.eos_token_id
        )
        if not eos_ids:
            raise LocalModelError(f"model {folder}: no end-of-sequence token in its generation config")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        vocab_size = int(model.get_output_embeddings().weight.shape[0])
        llg = build_llg_tokenizer(tokenizer, vocab_size, eos_ids)
        self._loaded = _Loaded(model, tokenizer, processor, llg, vocab_size, eos_ids, pad_id)
        return self._loaded

    # ---- requests -> inputs ------------------------------------------------------------------------
    def _prepare(self, lm: _Loaded, request: ChatRequest) -> _Prepared:
        if self.chat_inputs is not None:  # the family renders its own template: one question, one image
            image = _load_image(request) if (request.image_path or _has_image(request.messages)) else None
            question = "\n\n".join(t for m in request.messages if (t := _text_parts(m.get("content"))))
            return _Prepared(request, question, image)
        if lm.processor is not None:
            image = _load_image(request) if (request.image_path or _has_image(request.messages)) else None
            msgs = _vlm_messages(request.messages)
            if image is None:  # a text-only request to an image-text model: no image placeholder
                msgs = [
                    {"role": m["role"], "content": [p for p in m["content"] if p["type"] == "text"]}
                    for m in msgs
                ]
            elif not any(p["type"] == "image" for m in msgs for p in m["content"]):
                msgs[-1]["content"].insert(0, {"type": "image"})  # image given only as image_path
            text = lm.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            return _Prepared(request, text, image)
        msgs = [{"role": m["role"], "content": _text_parts(m.get("content"))} for m in request.messages]
        text = lm.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return _Prepared(request, text, None)

    def _grammar(self, lm: _Loaded, schema: dict[str, Any]) -> str:
        """Compiled and validated once per distinct schema; a bad schema raises GrammarError every time."""
        import orjson
        from llguidance import LLMatcher

        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        if key not in lm.grammars:
            try:
                grammar = compile_schema(schema)
            except GrammarError as e:
                lm.grammars[key] = e
            else:
                error = LLMatcher.validate_grammar(grammar, lm.llg_tokenizer)
                bad = error and not error.startswith("WARNING")
                lm.grammars[key] = GrammarError(error) if bad else grammar
        found = lm.grammars[key]
        if isinstance(found, GrammarError):
            raise found
        return found

    # ---- running -----------------------------------------------------------------------------------
    def run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        """Window by window (`chunk_size` requests, so a lazy sequence is never materialised whole):
        prepare each request (errors are per request), then generate in batches of similar shape."""
        if not len(requests):
            return
        with _torch_threads(self.threads):
            self._run(requests, on_result)

    def _run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        lm = self._load()
        window = max(self.options.chunk_size, self.batch_size)
        for start in range(0, len(requests), window):
            if self.stopping:
                return
            ready: list[_Prepared] = []
            for i in range(start, min(start + window, len(requests))):
                req = requests[i]
                try:
                    self._grammar(lm, req.json_schema)
                    ready.append(self._prepare(lm, req))
                except (GrammarError, OSError, ValueError, KeyError, TypeError) as e:
                    on_result(ChatResult(key=req.key, error=f"{type(e).__name__}: {e}"))
            # Same max_tokens / temperature / image-ness per batch; similar lengths together to pad less.
            ready.sort(key=lambda p: (*self._shape(p), len(p.text)))
            batch: list[_Prepared] = []
            for item in ready:
                if self.stopping:
                    return
                if batch and (len(batch) >= self.batch_size or self._shape(batch[0]) != self._shape(item)):
                    self._run_batch(lm, batch, on_result)
                    batch = []
                batch.append(item)
            if batch:
                self._run_batch(lm, batch, on_result)

    @staticmethod
    def _shape(item: _Prepared) -> tuple[int, float, bool]:
        r = item.request
        return (r.max_tokens, r.temperature, item.image is not None)

    def _run_batch(self, lm: _Loaded, batch: list[_Prepared], on_result: ResultCallback) -> None:
        try:
            results = self._generate(lm, batch)
        except (RuntimeError, MemoryError, ValueError, OSError) as e:  # one bad batch must not stop the build
            if len(batch) > 1:  # retry one by one so a single bad request fails alone
                for prepared in batch:
                    if not self.stopping:
                        self._run_batch(lm, [prepared], on_result)
                return
            unanswered = isinstance(e, RuntimeError | MemoryError)  # the model failed, not the input
            error = f"{type(e).__name__}: {str(e)[:300]}"
            results = [ChatResult(key=batch[0].request.key, error=error, unanswered=unanswered)]
        for r in results:
            on_result(r)

    def _generate(self, lm: _Loaded, batch: list[_Prepared]) -> list[ChatResult]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        texts = [p.text for p in batch]
        images = [p.image for p in batch if p.image is not None]
        if self.chat_inputs is not None:
            inputs = self.chat_inputs.inputs(texts, [p.image for p in batch])
        elif lm.processor is not None:
            kw: dict[str, Any] = {"images": images} if images else {}
            inputs = lm.processor(text=texts, return_tensors="pt", padding=True, **kw)
        else:
            inputs = lm.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        matchers = [new_matcher(lm.llg_tokenizer, self._grammar(lm, p.request.json_schema)) for p in batch]
        proc = JsonLogitsProcessor(matchers, lm.vocab_size, lm.eos_ids)
        first = batch[0].request
        sample = first.temperature > 0
        gen_config = GenerationConfig(
            max_new_tokens=first.max_tokens,
            do_sample=sample,
            temperature=first.temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=lm.pad_id,
            eos_token_id=lm.eos_ids,
        )
        with torch.inference_mode():
            out = lm.model.generate(
                **inputs, generation_config=gen_config, logits_processor=LogitsProcessorList([proc])
            )
        prompt_len = inputs["input_ids"].shape[1]
        generated = out[:, prompt_len:].tolist()
        proc.consume_final([row[-1] if row else None for row in generated])
        eos = set(lm.eos_ids)
        results: list[ChatResult] = []
        for row, prepared in enumerate(batch):
            tokens = generated[row]
            end = next((i for i, t in enumerate(tokens) if t in eos), None)
            body = tokens if end is None else tokens[:end]
            n_out = len(tokens) if end is None else end + 1
            n_in = int(inputs["attention_mask"][row].sum())
            key = prepared.request.key
            if proc.errors[row] is not None:
                results.append(ChatResult(key=key, error=f"grammar: {proc.errors[row]}", tokens_in=n_in))
                continue
            text = lm.tokenizer.decode(body, skip_special_tokens=True)
            reason = "stop" if proc.finished(row) else "length"
            results.append(
                ChatResult(key=key, text=text, finish_reason=reason, tokens_in=n_in, tokens_out=n_out)
            )
        return results

    def close(self) -> None:
        self._loaded = None
