"""The ASD answer cache: validated answers keyed by request fingerprint, in `<out>/asd_cache.jsonl`.

Every answer is appended and flushed the moment it is validated (through `sefe.jsonl_store`, whose torn-tail
policy it shares with the judge cache and the prediction files), so a crash, SIGKILL or Ctrl-C loses only
what was in flight; rerunning the same command sends only the fingerprints that are missing. Nothing is ever
rewritten in place, so the file is also an audit log of what was paid for.

A full disk: the row that could not be written, and every answer arriving after it, is held in memory
(`unwritten`) and written by `retry_unwritten`, while the engine stops sending (`sefe.asd_gen.engine`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from sefe.asd_gen.needs import NeedResult
from sefe.errors import is_disk_full
from sefe.jsonl_store import JsonlError, JsonlStore

CACHE_NAME = "asd_cache.jsonl"


class ResultCache:
    """Fingerprint -> NeedResult, loaded from and appended to `<out>/asd_cache.jsonl`."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / CACHE_NAME
        self._store = JsonlStore(self.path)
        self._entries: dict[str, NeedResult] = {}
        self.model_of: dict[str, str] = {}  # fingerprint -> the model that answered (for the manifest)
        self.tokens_of: dict[str, tuple[int, int]] = {}  # fingerprint -> tokens in/out it cost
        self.unwritten: list[dict[str, Any]] = []  # rows a full disk refused, kept for `retry_unwritten`
        self.write_error: OSError | None = None  # the first such error
        for n, row in self._store.rows():
            try:
                self._entries[row["key"]] = NeedResult.model_validate(row["result"])
            except (KeyError, TypeError, ValidationError) as e:
                raise JsonlError(f"{self.path} line {n}: not an ASD cache row ({e})") from None
            if row.get("model"):
                self.model_of[row["key"]] = row["model"]
            self.tokens_of[row["key"]] = (int(row.get("tokens_in") or 0), int(row.get("tokens_out") or 0))

    @property
    def torn_bytes(self) -> int:
        """Bytes of a row cut by a killed run (ignored; that request is simply redone)."""
        return self._store.torn_bytes

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> NeedResult | None:
        return self._entries.get(key)

    def put(self, key: str, result: NeedResult, **meta: Any) -> None:
        """Store and flush one answer (meta: raw text, tokens, model, need key: for audit only). On a full
        disk the row is kept in `unwritten` instead (and so is every later one, in order)."""
        row = {"key": key, "result": result.model_dump(exclude_none=True), **meta}
        self._entries[key] = result
        self.tokens_of[key] = (int(meta.get("tokens_in") or 0), int(meta.get("tokens_out") or 0))
        if self.unwritten:
            self.unwritten.append(row)
            return
        try:
            self._store.append(row)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.write_error = exc
            self.unwritten.append(row)

    def unwritten_bytes(self) -> int:
        """The space the held rows need."""
        return sum(len(orjson.dumps(r)) + 1 for r in self.unwritten)

    def retry_unwritten(self, seconds: float, every: float = 1.0) -> bool:
        """Write the held rows, trying again every `every` seconds for up to `seconds` (someone may free
        space meanwhile); True once they are on disk."""
        deadline = time.monotonic() + seconds
        while self.unwritten:
            try:
                self._store.append_many(self.unwritten, sync=True)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                if time.monotonic() >= deadline:
                    return False
                time.sleep(every)
                continue
            self.unwritten = []
        return True

    def close(self) -> None:
        self._store.close()
