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

import orjson
from sefe.asd_gen.backends.base import Backend, ChatRequest, ChatResult, ResultCallback
from sefe.asd_gen.backends.openai_backend import response_format, result_from_completion
from sefe.asd_gen.needs import GenerationOptions

MAX_LINES = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"


class BatchFileError(ValueError):
    """A provider output file is malformed (message names the file, line and field)."""


def request_line(req: ChatRequest, model: str) -> bytes:
    body = {
        "model": model,
        "messages": req.messages,
        "max_completion_tokens": req.max_tokens,
        "temperature": req.temperature,
        "response_format": response_format(req),
    }
    return orjson.dumps({"custom_id": req.key, "method": "POST", "url": ENDPOINT, "body": body}) + b"\n"


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
            raise ValueError("the batch backend needs --model (the model named in every request body)")
        if out_dir is None:
            raise ValueError("the batch backend needs an output folder for its request files")
        self.options = options
        self.dir = Path(out_dir) / "batch"
        self.output_dir = Path(options.batch_input_dir) if options.batch_input_dir else self.dir / "output"
        self.pending_files: list[str] = []
        self.max_lines = MAX_LINES
        self.max_bytes = MAX_BYTES

    @property
    def model_name(self) -> str:
        return str(self.options.model)

    def _outputs(self, wanted: set[str]) -> dict[str, ChatResult]:
        found: dict[str, ChatResult] = {}
        if not self.output_dir.is_dir():
            return found
        for path in sorted(self.output_dir.glob("*.jsonl")):
            with path.open("rb") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    res = parse_output_line(line, path, lineno)
                    if res.key in wanted:
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

    def _write(self, reqs: list[ChatRequest]) -> dict[str, str]:
        """Write new input files (atomically, each with its key index); return custom_id -> file name."""
        self.dir.mkdir(parents=True, exist_ok=True)
        n = len(list(self.dir.glob("input_*.jsonl")))
        placed: dict[str, str] = {}
        lines: list[bytes] = []
        keys: list[str] = []
        size = 0

        def flush() -> None:
            nonlocal n, lines, keys, size
            if not lines:
                return
            n += 1
            path = self.dir / f"input_{n:04d}.jsonl"
            _atomic_write(path, b"".join(lines))
            _atomic_write(path.with_suffix(".keys"), ("\n".join(keys) + "\n").encode())
            placed.update(dict.fromkeys(keys, path.name))
            lines, keys, size = [], [], 0

        model = self.model_name
        for req in reqs:
            line = request_line(req, model)
            if len(line) > self.max_bytes:
                raise ValueError(
                    f"request {req.key} alone is {len(line)} bytes, over the {self.max_bytes} limit"
                )
            if len(lines) >= self.max_lines or size + len(line) > self.max_bytes:
                flush()
            lines.append(line)
            keys.append(req.key)
            size += len(line)
        flush()
        return placed

    def run(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        outputs = self._outputs({r.key for r in requests})
        missing: list[ChatRequest] = []
        for req in requests:
            res = outputs.get(req.key)
            if res is None:
                missing.append(req)
            else:
                on_result(res)
        written = self._written()
        written.update(self._write([r for r in missing if r.key not in written]))
        files: set[str] = set()
        for req in missing:
            f = written[req.key]
            files.add(str(self.dir / f))
            on_result(
                ChatResult(
                    key=req.key, error=f"pending: in batch file {f}", extra={"pending": True, "file": f}
                )
            )
        self.pending_files = sorted(set(self.pending_files) | files)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
