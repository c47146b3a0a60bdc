"""Mean |B·A| over sampled positions without forming B·A: SDDMM forward, sparse-times-dense backward.

Forward: `torch.sparse.sampled_addmm` computes (B·A) only at the key pattern (a CSR tensor: keys are kept in
row-major order, which is CSR order). Backward: with g the per-key upstream gradient as a sparse matrix G,
dL/dB = G·Aᵀ and dL/dA = (Gᵀ·B)ᵀ; Gᵀ uses a transposed CSR structure precomputed once per task, since
dense·sparse products are ~10x slower than sparse·dense on CPU. The math runs in fp32 (the factors are small;
the CPU sparse kernels have no bf16) and gradients are cast back to the parameters' dtype.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


def _csr(crow: torch.Tensor, col: torch.Tensor, vals: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR tensor without the "beta" notice: only the stable sampled_addmm / sparse@dense paths use it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        return torch.sparse_csr_tensor(crow, col, vals, shape, check_invariants=False)


@dataclass
class CsrPattern:
    """Key positions of one (out, in) matrix as CSR (row-major) and transposed CSR structures."""

    shape: tuple[int, int]
    crow: torch.Tensor  # (out+1,)
    col: torch.Tensor  # (K,)
    crow_t: torch.Tensor  # (in+1,)
    row_t: torch.Tensor  # (K,) rows in column-major key order
    perm_t: torch.Tensor  # (K,) row-major key number of each column-major key
    weights: torch.Tensor | None  # (K,) fp32 summing to 1, or None for a plain mean

    @property
    def n_keys(self) -> int:
        return int(self.col.numel())

    @classmethod
    def from_indices(
        cls, flat: np.ndarray, shape: tuple[int, int], weights: np.ndarray | None, device: torch.device
    ) -> CsrPattern:
        out_f, in_f = shape
        rows = flat // in_f
        cols = flat % in_f
        perm = np.argsort(cols, kind="stable")  # column-major order; rows stay ascending within a column
        idx_dtype = np.int32 if max(out_f, in_f, flat.size) < 2**31 - 1 else np.int64

        def cum(counts: np.ndarray) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(counts)]).astype(idx_dtype)

        def put(arr: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(arr)).to(device)

        return cls(
            shape=shape,
            crow=put(cum(np.bincount(rows, minlength=out_f))),
            col=put(cols.astype(idx_dtype)),
            crow_t=put(cum(np.bincount(cols, minlength=in_f))),
            row_t=put(rows[perm].astype(idx_dtype)),
            perm_t=put(perm.astype(idx_dtype)),
            weights=None if weights is None else put(weights.astype(np.float32)),
        )

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        return _csr(self.crow, self.col, values, self.shape)

    def csr_t(self, values: torch.Tensor) -> torch.Tensor:
        shape_t = (self.shape[1], self.shape[0])
        vals_t = values.index_select(0, self.perm_t)
        return _csr(self.crow_t, self.row_t, vals_t, shape_t)


class SampledAbsMean(torch.autograd.Function):
    """Σ_k w_k |(B·A)_k| (w = 1/K without weights) over a CsrPattern; returns an fp32 scalar."""

    @staticmethod
    def forward(ctx, lora_a: torch.Tensor, lora_b: torch.Tensor, pat: CsrPattern) -> torch.Tensor:
        a32, b32 = lora_a.float(), lora_b.float()
        empty = torch.zeros(pat.n_keys, dtype=torch.float32, device=a32.device)
        vals = torch.sparse.sampled_addmm(pat.csr(empty), b32, a32, beta=0.0).values()
        mags = vals.abs()
        total = mags.mean() if pat.weights is None else (mags * pat.weights).sum()
        ctx.save_for_backward(lora_a, lora_b, vals.sign().to(torch.int8))  # 1 byte a key until backward
        ctx.pat = pat
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        lora_a, lora_b, signs = ctx.saved_tensors
        pat: CsrPattern = ctx.pat
        g = signs.float()
        g = g * (grad_out / pat.n_keys) if pat.weights is None else g * pat.weights * grad_out
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_b = (pat.csr(g) @ lora_a.float().t()).to(lora_b.dtype)
        if ctx.needs_input_grad[0]:
            grad_a = (pat.csr_t(g) @ lora_b.float()).t().to(lora_a.dtype)
        return grad_a, grad_b, None
