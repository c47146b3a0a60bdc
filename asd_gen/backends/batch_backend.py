"""OpenAI Batch API round trip (also vLLM's offline `run_batch`, which reads and writes the same format).

A build writes every request that has no answer yet to `<out>/batch/input_NNNN.jsonl` (at most 50,000 lines
and 200 MB a file, the Batch API's limits) and reports those files as pending. The user uploads them (or runs
`vllm run_batch`), puts the output files in `<out>/batch/output/` (or `--batch-input-dir`), and reruns the
same build: answers are matched by `custom_id`, never by line order. A request already written to a pending
file is not written again, so rerunning before the outputs arrive changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from sefe.asd_gen.backends.base import Backend, ChatRequest, ChatResult, ResultCallback
from sefe.asd_gen.backends.openai_backend import chat_body, result_from_completion
from sefe.asd_gen.needs import GenerationOptions
from sefe.atomic import atomic_write_bytes
from sefe.errors import InputError

MAX_LINES = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"


class BatchFileError(InputError):
    """A provider output file is malformed (message names the file, line and field)."""


def request_line(req: ChatRequest, model: str) -> bytes:
    line = {"custom_id": req.key, "method": "POST", "url": ENDPOINT, "body": chat_body(req, model)}
    return orjson.dumps(line) + b"\n"


def parse_output_line(line: bytes, path: Path, lineno: int) -> ChatResult:
    """One Batch API / run_batch output line -> ChatResult (provider errors become error results)."""
    try:
        row = orjson.loads(line)
        custom_id = row["custom_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise BatchFileError(f"{path}: line {lineno}: not a batch output line with custom_id ({e})") from None
    if not isinstance(custom_id, str):
        raise BatchFileError(f"{path}: line {lineno}: field custom_id must be a string")
    err = row.get("error")
    if err:
        msg = err.get("message", err) if isinstance(err, dict) else err
        return ChatResult(key=custom_id, error=f"batch error: {msg}")
    resp = row.get("response")
    if not isinstance(resp, dict) or not isinstance(resp.get("body"), dict):
        raise BatchFileError(f"{path}: line {lineno} (custom_id {custom_id}): field response.body missing")
    status = resp.get("status_code", 200)
    if status != 200:
        detail = resp["body"].get("error", {})
        msg = detail.get("message", detail) if isinstance(detail, dict) else detail
        return ChatResult(key=custom_id, error=f"batch HTTP {status}: {msg}")
    return result_from_completion(custom_id, resp["body"])


class BatchBackend(Backend):
    name = "batch"

    def __init__(self, options: GenerationOptions, out_dir: str | Path | None = None) -> None:
        if not options.model:
            raise InputError("the batch backend needs --model (the model named in every request body)")
        if out_dir is None:
            raise InputError("the batch backend needs an output folder for its request files")
        self.options = options
        self.dir = Path(out_dir) / "batch"
        self.output_dir = Path(options.batch_input_dir) if options.batch_input_dir else self.dir / "output"
        self.pending_files: list[str] = []
        self.max_lines = MAX_LINES
        self.max_bytes = MAX_BYTES

    @property
    def model_name(self) -> str:
        return str(self.options.model)

    def _outputs(self) -> dict[str, ChatResult]:
        """Every answer in the provider's output files, by custom_id (line order is meaningless)."""
        found: dict[str, ChatResult] = {}
        if not self.output_dir.is_dir():
            return found
        for path in sorted(self.output_dir.glob("*.jsonl")):
            with path.open("rb") as f:
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        res = parse_output_line(line, path, lineno)
                        found[res.key] = res
        return found

    def _written(self) -> dict[str, str]:
        """custom_id -> input file, from the `.keys` index written next to each input file."""
        out: dict[str, str] = {}
        for keys in sorted(self.dir.glob("input_*.keys")):
            name = keys.with_suffix(".jsonl").name
            for k in keys.read_text().split():
                out[k] = name
        return out

    def run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        """Answer what the output files hold; stream the rest into new input files; report them pending."""
        outputs = self._outputs()
        written = self._written()
        writer = _SplitWriter(self.dir, self.max_lines, self.max_bytes)
        pending: list[tuple[str, str | None]] = []
        for req in requests:  # one pass: requests (and their images) are built one at a time
            res = outputs.get(req.key)
            if res is not None:
                on_result(res)
            elif req.key in written:
                pending.append((req.key, written[req.key]))
            else:
                writer.add(req.key, request_line(req, self.model_name))
                pending.append((req.key, None))
        placed = writer.close()
        files: set[str] = set()
        for key, name in pending:
            f = name or placed[key]
            files.add(str(self.dir / f))
            on_result(
                ChatResult(
                    key=key,
                    error=f"pending: in batch file {f}",
                    unanswered=True,
                    extra={"pending": True, "file": f},
                )
            )
        self.pending_files = sorted(set(self.pending_files) | files)


class _SplitWriter:
    """Appends request lines to `input_NNNN.jsonl` files of at most `max_lines` lines and `max_bytes` bytes;
    each file appears atomically, with its `.keys` index, once it is complete."""

    def __init__(self, folder: Path, max_lines: int, max_bytes: int) -> None:
        self.folder = folder
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.n = len(list(folder.glob("input_*.jsonl"))) if folder.is_dir() else 0
        self.placed: dict[str, str] = {}
        self._fh: Any = None
        self._keys: list[str] = []
        self._size = 0

    def add(self, key: str, line: bytes) -> None:
        if len(line) > self.max_bytes:
            raise ValueError(f"request {key} alone is {len(line)} bytes, over the {self.max_bytes} limit")
        if self._fh is not None and (
            len(self._keys) >= self.max_lines or self._size + len(line) > self.max_bytes
        ):
            self._finish()
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.n += 1
            self._path = self.folder / f"input_{self.n:04d}.jsonl"
            self._fh = self._path.with_name(self._path.name + ".tmp").open("wb")
        self._fh.write(line)
        self._keys.append(key)
        self._size += len(line)

    def _finish(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._path.with_name(self._path.name + ".tmp"), self._path)
        atomic_write_bytes(self._path.with_suffix(".keys"), ("\n".join(self._keys) + "\n").encode())
        self.placed.update(dict.fromkeys(self._keys, self._path.name))
        self._fh, self._keys, self._size = None, [], 0

    def close(self) -> dict[str, str]:
        if self._fh is not None:
            self._finish()
        return self.placed
