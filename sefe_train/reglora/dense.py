"""Mean |B·A| over key positions the reference way (dense B·A, then gather), without its memory traps.

Gather before abs and reduce at once: `index_select` saves only the indices for backward, so the dense B·A
is freed as soon as the gathered values exist (abs-then-gather, `torch.take` or a dense mask product would
keep it alive until backward: 13 GB in bf16 over a 7B model's 224 modules).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class FlatPattern:
    """Key positions of one (out, in) matrix as flat row-major indices."""

    shape: tuple[int, int]
    flat: torch.Tensor  # (K,) int32 when it fits (index_select accepts it), else int64
    weights: torch.Tensor | None  # (K,) fp32 summing to 1, or None for a plain mean

    @property
    def n_keys(self) -> int:
        return int(self.flat.numel())

    @classmethod
    def from_indices(
        cls, flat: np.ndarray, shape: tuple[int, int], weights: np.ndarray | None, device: torch.device
    ) -> FlatPattern:
        dtype = np.int32 if shape[0] * shape[1] < 2**31 - 1 else np.int64
        return cls(
            shape=shape,
            flat=torch.from_numpy(flat.astype(dtype)).to(device),
            weights=None if weights is None else torch.from_numpy(weights.astype(np.float32)).to(device),
        )


def dense_abs_mean(lora_a: torch.Tensor, lora_b: torch.Tensor, pat: FlatPattern) -> torch.Tensor:
    """Σ_k w_k |(B·A)_k| with B·A formed in the parameters' dtype; the reduction runs in fp32."""
    picked = (lora_b @ lora_a).view(-1).index_select(0, pat.flat).float()
    mags = picked.abs()
    return mags.mean() if pat.weights is None else (mags * pat.weights).sum()
