"""LoTA's lottery-ticket masks (Panda et al., 2024, arXiv:2406.16797) and the gradient masking that trains
them.

LoTA in three phases: (1) calibrate: fine-tune all target weights for a few steps; (2) extract: the task
vector τ = W_calibrated - W_before, keep the top-k % of |τ| as the mask; (3) restore W_before and train only
the masked entries. The continual form (LoTTO) excludes from a task's mask every entry an earlier task's mask
used, so the tasks' updates are disjoint. Reference (kiddyboots216/lottery-ticket-adaptation,
rlaif/save_mask.py): one global magnitude threshold over all attention and MLP weights; its LoTTO example
(rlaif/scripts/continual_learning.sh) uses sparsity 99 (keep 1 %).

The global top-k is found by an exact radix select over the fp32 bit patterns (non-negative floats order like
their int32 bits): two counting passes with 2^15 and 2^16 bins and no concatenation of all magnitudes (26 GB
at 7B), so only one matrix's |τ| is alive at a time. Ties at the threshold: (matrix order, flat index).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import torch

Scope = Literal["global", "per_matrix"]
#: A re-iterable source of (name, magnitude) pairs: fp32, excluded entries negative (never selected).
MagnitudeSource = Callable[[], Iterator[tuple[str, torch.Tensor]]]


def n_keep(numel: int, keep_percent: float) -> int:
    """floor(keep% of the entries), at least one."""
    return max(1, min(numel, math.floor(numel * keep_percent / 100.0 + 1e-9)))


def _bits(mag: torch.Tensor) -> torch.Tensor:
    """int32 view of fp32 magnitudes; negative (excluded) entries map to -1."""
    flat = mag.detach().reshape(-1).float().contiguous()
    bits = flat.view(torch.int32)
    return torch.where(flat >= 0, bits, torch.full_like(bits, -1))


def _select_bin(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Highest bin b with count(bins >= b) >= k, and the count strictly above it."""
    above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # above[b] = count(bins >= b)
    b = int(torch.nonzero(above >= k).max())
    strictly = int(above[b + 1]) if b + 1 < above.numel() else 0
    return b, strictly


def kth_largest_bits(source: MagnitudeSource, k: int) -> tuple[int, int]:
    """(t, n_above): t = int32 bits of the k-th largest selectable magnitude, n_above = how many exceed t.

    Raises if fewer than k entries are selectable.
    """
    hi_hist = None
    for _, mag in source():
        b = _bits(mag)
        b = b[b >= 0]
        h = torch.bincount((b >> 16).long(), minlength=1 << 15).cpu()
        hi_hist = h if hi_hist is None else hi_hist + h
    if hi_hist is None or int(hi_hist.sum()) < k:
        avail = 0 if hi_hist is None else int(hi_hist.sum())
        raise ValueError(f"cannot select {k} entries: only {avail} are selectable")
    hi, above_hi = _select_bin(hi_hist, k)
    lo_hist = torch.zeros(1 << 16, dtype=torch.long)
    for _, mag in source():
        b = _bits(mag)
        b = b[(b >> 16) == hi]
        lo_hist += torch.bincount((b & 0xFFFF).long(), minlength=1 << 16).cpu()
    lo, above_lo = _select_bin(lo_hist, k - above_hi)
    return (hi << 16) | lo, above_hi + above_lo


def select_masks(source: MagnitudeSource, k: int) -> dict[str, torch.Tensor]:
    """Exactly k entries: every magnitude above the k-th largest, then ties in (matrix, index) order."""
    t, n_above = kth_largest_bits(source, k)
    ties_left = k - n_above
    out: dict[str, torch.Tensor] = {}
    for name, mag in source():
        b = _bits(mag)
        mask = b > t
        if ties_left > 0:
            tie = torch.nonzero(b == t).squeeze(1)[:ties_left]
            mask[tie] = True
            ties_left -= int(tie.numel())
        out[name] = mask.view(mag.shape)
    return out


def _single(name: str, mag: torch.Tensor) -> MagnitudeSource:
    """A re-iterable source of one matrix."""

    def source() -> Iterator[tuple[str, torch.Tensor]]:
        yield name, mag

    return source


def lottery_masks(
    task_vector: Mapping[str, torch.Tensor] | Callable[[], Iterator[tuple[str, torch.Tensor]]],
    keep_percent: float,
    exclude: Mapping[str, torch.Tensor] | None = None,
    scope: Scope = "global",
) -> dict[str, torch.Tensor]:
    """Top `keep_percent` % of |τ| as bool masks, never choosing an entry set in `exclude` (LoTTO).

    `scope="global"`: one threshold over all matrices (the reference); `"per_matrix"`: keep% of each matrix.
    k counts all entries (excluded ones too), so every task gets the same budget; when fewer entries are free
    than the budget, all free entries are taken.
    """

    def items() -> Iterator[tuple[str, torch.Tensor]]:
        it: Iterable[tuple[str, torch.Tensor]] = (
            task_vector.items() if isinstance(task_vector, Mapping) else task_vector()
        )
        for name, tau in it:
            mag = tau.detach().float().abs()
            if not bool(torch.isfinite(mag).all()):
                raise ValueError(f"{name}: the task vector has non-finite entries, cannot pick a mask")
            if exclude is not None and name in exclude:
                ex = exclude[name].to(mag.device, torch.bool)
                if ex.shape != mag.shape:
                    raise ValueError(f"{name}: exclusion mask shape {tuple(ex.shape)} != {tuple(mag.shape)}")
                mag = mag.masked_fill(ex, -1.0)
            yield name, mag

    def free(mag: torch.Tensor) -> int:
        return int((mag >= 0).sum())

    if scope == "per_matrix":
        out: dict[str, torch.Tensor] = {}
        for name, mag in items():
            k = min(n_keep(mag.numel(), keep_percent), free(mag))
            out[name] = (
                select_masks(_single(name, mag), k)[name] if k else torch.zeros_like(mag, dtype=torch.bool)
            )
        return out
    total = sum(mag.numel() for _, mag in items())
    n_free = sum(free(mag) for _, mag in items())
    k = min(n_keep(total, keep_percent), n_free)
    if k == 0:
        return {name: torch.zeros_like(mag, dtype=torch.bool) for name, mag in items()}
    return select_masks(items, k)


class GradientMask:
    """Zero the gradient outside each parameter's mask, before it reaches `.grad`, DDP or DeepSpeed.

    A tensor hook on the parameter runs before gradient accumulation and before the data-parallel reducers'
    hooks, so every backend only ever sees masked gradients. With zero gradients from the first step, Adam's
    moments stay zero there and the entries do not move (weight decay would move them: refuse it upstream).

    The hooks are registered at set-up, before the Trainer moves the model: each mask follows its gradient's
    device at the first backward after a move (one copy, kept), never the device it was registered on.
    """

    def __init__(self, params: Mapping[str, torch.nn.Parameter], masks: Mapping[str, torch.Tensor]) -> None:
        missing = sorted(set(params) - set(masks))
        if missing:
            raise ValueError(f"no mask for parameter(s) {missing[:3]} (of {len(missing)})")
        self.masks: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        for name, p in params.items():
            m = masks[name].to(torch.bool)
            if m.shape != p.shape:
                raise ValueError(f"{name}: mask shape {tuple(m.shape)} != parameter shape {tuple(p.shape)}")
            self.masks[name] = m
            self._handles.append(p.register_hook(lambda g, name=name: self.apply(name, g)))

    def apply(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        """`grad` zeroed outside `name`'s mask, the mask moved to the gradient's device first if needed."""
        m = self.masks[name]
        if m.device != grad.device:
            m = self.masks[name] = m.to(grad.device)
        return grad * m

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
