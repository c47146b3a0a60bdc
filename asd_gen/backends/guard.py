"""Ending a backend run early and cleanly: a circuit breaker for dead servers, and graceful Ctrl-C / SIGTERM.

Why: a dead server must cost seconds, not an hour of retries; and a user who stops a long run must keep every
answer already received. Both work the same way: `Backend.request_stop()` makes the backend start nothing
new while in-flight requests finish and report (so their answers still reach the cache); the caller then
leaves the rest open for the next run.

- Circuit breaker: after `threshold` results in a row that got no answer at all (`ChatResult.unanswered`:
  connection refused or reset, timeouts, 5xx / 429 after the SDK's own retries, a crashed engine), the run is
  stopped. Any answered result resets the count. The threshold is `GenerationOptions.max_consecutive_failures`
  (default `DEFAULT_BREAKER_THRESHOLD`, 0 disables).
- First SIGINT / SIGTERM: stop sending, let in-flight answers land, then the caller raises `RunInterrupted`
  (exit 130). A second one raises `KeyboardInterrupt` at once; what is cached is already on disk.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from sefe.asd_gen.backends.base import Backend, ChatResult

DEFAULT_BREAKER_THRESHOLD = 8
RESUME_HINT = "rerun the same command to resume (answers received so far are cached)"


class RunInterrupted(KeyboardInterrupt):
    """Stopped by Ctrl-C or SIGTERM after in-flight answers were stored; nothing half-written was left."""


class RunGuard:
    """Context manager around a run (one or more `Backend.run` calls); feed every result to `observe`.

    Signals are caught only in the main thread (where Python delivers them); `attach` names the backend to
    stop, and stops it at once if a signal came before it existed.
    """

    def __init__(self, threshold: int = DEFAULT_BREAKER_THRESHOLD) -> None:
        self.backend: Backend | None = None
        self.threshold = threshold
        self.consecutive = 0
        self.tripped: str | None = None  # why the breaker stopped the run
        self.interrupted: str | None = None  # the signal's name
        self.disk_full: str | None = None  # why answers cannot be stored: send nothing more
        self._saved: dict[int, Any] = {}

    def attach(self, backend: Backend) -> None:
        if backend is not self.backend:
            self.backend = backend
            backend.reset_stop()
        if self.stop_reason:
            backend.request_stop()

    @property
    def stop_reason(self) -> str | None:
        if self.interrupted:
            return f"interrupted ({self.interrupted})"
        return self.disk_full or self.tripped

    def stop_disk_full(self, reason: str) -> None:
        """Answers can no longer be stored: stop sending at once (those in flight still land, in memory)."""
        if self.disk_full is None:
            self.disk_full = reason
            if self.backend is not None:
                self.backend.request_stop()

    def observe(self, res: ChatResult) -> None:
        if res.error is not None and res.unanswered and not res.extra.get("pending"):
            self.consecutive += 1
            if self.threshold and self.consecutive >= self.threshold and self.tripped is None:
                self.tripped = (
                    f"stopped after {self.consecutive} requests in a row got no answer (last: {res.error})"
                )
                if self.backend is not None:
                    self.backend.request_stop()
        else:
            self.consecutive = 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt  # second signal: leave now (every stored answer is already flushed)
        self.interrupted = signal.Signals(signum).name
        if self.backend is not None:
            self.backend.request_stop()
        sys.stderr.write(
            f"\n{self.interrupted}: sending no new requests; waiting for those in flight "
            "(press Ctrl-C again to quit at once)\n"
        )

    def __enter__(self) -> RunGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()
        if self.backend is not None:
            self.backend.reset_stop()
