"""Paired 95 % intervals and a bootstrap over test items: what a finding may claim at n seeds.

Why: a rule of thumb (|difference| above the summed spread) was about p = 0.2 at n = 3, and the README stated
a finding whose interval ran from -8.5 to +23 points. Here the arms are paired by seed (same task data, ASD
selection and training seed), the difference per seed gets a Student-t interval, and a finding is worded from
the interval alone: "reproduces" when it lies wholly on the expected side of 0, "does not reproduce" when it
lies wholly on the other side, else "not established" with the interval stated. The bootstrap over items
resamples the test items of every task (the same draw for both arms) and reports the percentile interval of
the same mean difference: test-set noise, which seeds alone do not show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

#: two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..30
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964


def t975(df: int) -> float:
    """t(0.975, df): the table up to 30, then the Cornish-Fisher expansion (error < 1e-3)."""
    if df < 1:
        raise ValueError("a t interval needs at least two paired values")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


class Interval(BaseModel):
    """Mean paired difference and its 95 % interval (None bounds: fewer than two pairs)."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float | None = None


def paired_t(a: Sequence[float], b: Sequence[float]) -> Interval:
    """Mean of a[s] - b[s] with its 95 % Student-t interval (pairs in the same order, e.g. by seed)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values: {len(a)} against {len(b)}")
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return Interval(mean=mean, low=None, high=None, n=n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return Interval(mean=mean, low=mean - half, high=mean + half, n=n, sd=sd)


class NoDefinedDraw(ValueError):
    """No bootstrap draw gave a defined difference (every draw left a cell without items of its kind)."""


def bootstrap_items(
    n_items: Sequence[int],
    difference: Callable[[list[Any]], Any],
    reps: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile 95 % interval of a difference under resampled test items.

    `difference(draws)` gets, per task t, an integer array (reps x n_items[t]) of item indices drawn with
    replacement (one draw shared by both arms and all seeds: the pairing is kept) and returns the reps
    differences (an array)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, size=(reps, n)) for n in n_items]
    values = np.asarray(difference(draws), dtype=float)
    # a draw can leave a cell without items of a kind (held-out lines in a 6-item test): undefined, dropped
    values = np.sort(values[np.isfinite(values)])
    if values.size == 0:
        raise NoDefinedDraw("no resampled difference is defined")
    n = values.size
    return float(values[int(0.025 * (n - 1))]), float(values[math.ceil(0.975 * (n - 1))])


def verdict(iv: Interval, expect_positive: bool = True) -> str:
    """The wording of a finding from its interval (never from a rule of thumb)."""
    if iv.low is None or iv.high is None:
        return "not established"
    low, high = (iv.low, iv.high) if expect_positive else (-iv.high, -iv.low)
    if low > 0:
        return "reproduces"
    if high < 0:
        return "does not reproduce"
    return "not established"


def retention(final: float | None, own: float | None, base: float, margin: float = 30.0) -> float | None:
    """ρ = (K[T][i] - base) / (K[i][i] - base) for a task learned at least `margin` points above its base;
    None for a task not learned that well (its loss cannot be told from noise)."""
    if final is None or own is None or own < base + margin:
        return None
    return (final - base) / (own - base)
