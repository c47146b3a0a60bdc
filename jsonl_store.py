"""Append-only JSONL files that survive a kill: the ASD answer cache, the judge's ratings, `sefe eval run`'s
predictions.

One policy for all of them. Every row is one `orjson` object plus `\\n`, written with one `write` and
flushed, so a process killed mid-write can only leave bytes after the last newline: a *torn tail*. Readers
ignore the torn tail (that row is simply produced again); the first append of a writer cuts it off before
writing, so the file is again whole lines, readable by any JSONL tool (CoIN's scorers included). A line
that does not parse *before* the last newline was not torn by us: it is an error naming the file and the
line, never silently skipped or cut. Nothing else is ever rewritten in place. An append that fails (a full
disk) is cut off again before the error goes up: the rows stay the caller's to keep and retry.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson


class JsonlError(ValueError):
    """A line of a JSONL store is not a JSON object (and is not a torn tail); the message names the line."""


def _torn_offset(path: Path) -> int | None:
    """Byte offset where the torn tail starts, or None when the file ends on a newline (or is empty)."""
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as f:
        pos = size
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                end = pos + nl + 1
                return None if end == size else end
        return 0


class JsonlStore:
    """Rows of one JSONL file: `rows()` reads whole lines, `append()` writes and flushes one row.

    Thread-safe appends (backends call back from worker threads). `sync=True` on an append (or `close()`)
    also fsyncs, for writers that want a finished batch on disk before they go on.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.torn_bytes = 0  # size of the torn tail found by the last read or cut by the first append
        self._fh: Any = None
        self._lock = threading.Lock()

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, object) for every whole line; blank lines are skipped, the torn tail ignored."""
        if not self.path.exists():
            return
        torn = _torn_offset(self.path)
        size = self.path.stat().st_size
        end = size if torn is None else torn
        self.torn_bytes = size - end
        with self.path.open("rb") as f:
            read = 0
            for n, line in enumerate(f, start=1):
                read += len(line)
                if read > end:
                    break
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise JsonlError(
                        f"{self.path} line {n}: not JSON ({e}); remove or fix that line"
                    ) from None
                if not isinstance(obj, dict):
                    raise JsonlError(f"{self.path} line {n}: not a JSON object; remove or fix that line")
                yield n, obj

    def _open(self) -> Any:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = self.path.open("ab", buffering=0)  # unbuffered: a failed write leaves nothing queued
            torn = _torn_offset(self.path)
            if torn is not None:
                self.torn_bytes = self.path.stat().st_size - torn
                fh.truncate(torn)  # the torn tail only: every byte before it is a whole row
            self._fh = fh
        return self._fh

    def append(self, row: dict[str, Any], *, sync: bool = False) -> None:
        self.append_many([row], sync=sync)

    def append_many(self, rows: Iterable[dict[str, Any]], *, sync: bool = False) -> None:
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        if not data:
            return
        with self._lock:
            fh = self._open()
            start = os.fstat(fh.fileno()).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[fh.write(view) :]
                if sync:
                    os.fsync(fh.fileno())
            except OSError:
                # a full disk or a quota: cut the partial row off again, so the file stays whole lines and
                # the caller can keep the rows and retry them later
                with contextlib.suppress(OSError):
                    os.ftruncate(fh.fileno(), start)
                raise

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None

    def __enter__(self) -> JsonlStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
