"""Append-only JSONL store of validated answers, keyed by request fingerprint.

Every answer is written and flushed the moment it is validated, so a crash, SIGKILL or Ctrl-C loses only what
was in flight; rerunning the same command sends only the fingerprints that are missing. A torn last line (the
process died mid-write) is ignored on load and the next append starts on a fresh line. Nothing is ever
rewritten in place, so the file is also an audit log of what was paid for.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import orjson

from sefe.asd_gen.needs import NeedResult

CACHE_NAME = "asd_cache.jsonl"


class ResultCache:
    """Fingerprint -> NeedResult, loaded from and appended to `<out>/asd_cache.jsonl`."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / CACHE_NAME
        self._entries: dict[str, NeedResult] = {}
        self.skipped_lines = 0
        self.model_of: dict[str, str] = {}  # fingerprint -> the model that answered (for the manifest)
        self._fh: Any = None
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                    self._entries[row["key"]] = NeedResult.model_validate(row["result"])
                    if row.get("model"):
                        self.model_of[row["key"]] = row["model"]
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    self.skipped_lines += 1  # torn write from a killed run: that request is simply redone

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> NeedResult | None:
        return self._entries.get(key)

    def _open(self) -> Any:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            needs_newline = (
                self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
            )
            self._fh = self.path.open("ab")
            if needs_newline:
                self._fh.write(b"\n")
        return self._fh

    def put(self, key: str, result: NeedResult, **meta: Any) -> None:
        """Store and flush one answer (meta: raw text, tokens, model, need key: for audit only)."""
        line = orjson.dumps({"key": key, "result": result.model_dump(exclude_none=True), **meta}) + b"\n"
        with self._lock:
            fh = self._open()
            fh.write(line)
            fh.flush()
            self._entries[key] = result

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
