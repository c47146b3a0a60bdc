"""Counters for one generation run: requests, cache hits, failures, tokens and cost (from per-Mtok prices)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RunStats:
    total: int = 0  # Needs to answer in this run (cached ones included)
    cached: int = 0
    done: int = 0  # validated answers received in this run
    failed: int = 0  # quarantined after all tries
    open: int = 0  # not answered: server down, pending batch, spend cap, stopped early
    pending: int = 0  # batch: written to a file, no output yet (counted in `open` too)
    sent: int = 0  # requests handed to the backend (retries of invalid output included)
    invalid: int = 0  # outputs that failed parsing/validation (each may be retried)
    tokens_in: int = 0
    tokens_out: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.cached + self.done + self.failed + self.open

    def rate(self) -> float:
        """Answered requests per second since the start (cache hits excluded)."""
        elapsed = time.monotonic() - self.started
        return (self.done + self.failed) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        r = self.rate()
        left = self.total - self.finished
        return left / r if r > 0 else None


def cost_usd(
    tokens_in: int, tokens_out: int, price_in: float | None, price_out: float | None
) -> float | None:
    """Cost from prices per million tokens; None when no price was given (we never guess a price)."""
    if price_in is None and price_out is None:
        return None
    return round(tokens_in * (price_in or 0.0) / 1e6 + tokens_out * (price_out or 0.0) / 1e6, 6)
