"""O-LoRA's regulariser (Wang et al., 2023, arXiv:2310.14152): keep each task's LoRA in its own subspace.

For every adapted linear the new task's `lora_A` (r x in) is pushed orthogonal to the rows of the earlier
tasks' A matrices:  L_orth = Σ_modules Σ_{t' < t} Σ_ij |A_t' · A_tᵀ|_ij.  The optional L2 term is the
reference's `Σ ||P||_2` over the new LoRA's A and B matrices (a sum of Frobenius norms, not of squares).
λ2 = 0 as the reference scripts (cmnfriend/O-LoRA); λ1's default scales with the rank (olora.py).

Kept between tasks: per module the rows of all earlier A's, stacked ((Σ r_t') x in), in
`olora_prev_a.safetensors`.
The LoRA itself is merged after each task like plain LoRA: a merged update cannot be un-merged, but the
subspaces it used stay recorded, which is all the loss needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from sefe.atomic import atomic_path
from sefe.sefe_train.reglora.modules import AdaptedLinear, adapted_linears

FORMAT = "sefe.olora.prev_a"
VERSION = "1"


def orthogonality_loss(prev_a: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """Σ_ij |A_prev · A_tᵀ|_ij for one module; `prev_a` stacks every earlier task's rows ((Σr) x in)."""
    if prev_a.shape[1] != a_t.shape[1]:
        raise ValueError(f"A matrices disagree on in_features: {tuple(prev_a.shape)} vs {tuple(a_t.shape)}")
    return (prev_a.to(a_t.dtype) @ a_t.T).abs().sum()


def l2_loss(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ ||P||_F over the new LoRA's matrices (the reference's `torch.norm(param, p=2)` summed)."""
    terms = [p.float().norm(p=2) for p in params]
    if not terms:
        raise ValueError("l2_loss: no parameters given")
    return torch.stack(terms).sum()


class PrevAStore:
    """The earlier tasks' A matrices per adapted linear (base-model module names), stacked row-wise."""

    def __init__(self, prev: Mapping[str, torch.Tensor] | None = None, tasks: int = 0) -> None:
        self.prev: dict[str, torch.Tensor] = dict(prev or {})
        self.tasks = tasks

    @property
    def is_empty(self) -> bool:
        return not self.prev

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.prev.values())

    def rows(self, name: str) -> int:
        t = self.prev.get(name)
        return 0 if t is None else int(t.shape[0])

    def add_task(self, modules: Iterable[AdaptedLinear], dtype: torch.dtype = torch.float32) -> PrevAStore:
        """Append the current LoRA's A of every adapted linear (call after training, before merging)."""
        added = 0
        for item in modules:
            a = item.lora_A.detach().to("cpu", dtype)
            old = self.prev.get(item.name)
            if old is not None and old.shape[1] != a.shape[1]:
                raise ValueError(f"{item.name}: in_features changed from {old.shape[1]} to {a.shape[1]}")
            self.prev[item.name] = a.clone() if old is None else torch.cat([old, a], dim=0)
            added += 1
        if not added:
            raise ValueError("no LoRA-adapted linear layers found in the model")
        self.tasks += 1
        return self

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temp file + rename): a kill never leaves half a file under the final name."""
        from safetensors.torch import save_file

        meta = {"format": FORMAT, "version": VERSION, "tasks": str(self.tasks)}
        meta["rows"] = json.dumps({n: int(t.shape[0]) for n, t in self.prev.items()})
        with atomic_path(path) as tmp:
            save_file({n: t.contiguous() for n, t in self.prev.items()}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrevAStore:
        from safetensors import safe_open

        path = Path(path)
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            if meta.get("format") != FORMAT:
                fmt = meta.get("format")
                raise ValueError(f"{path}: not an O-LoRA A-matrix file (metadata 'format' is {fmt!r})")
            prev = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 - not a dict
        for name, t in prev.items():
            if t.ndim != 2:
                raise ValueError(f"{path}: tensor {name!r} must be 2-D (rows x in), got {tuple(t.shape)}")
        return cls(prev, tasks=int(meta.get("tasks", "0")))


class OLoRARegularizer:
    """The O-LoRA loss terms of a peft model's current LoRA against the earlier tasks' A's in `store`.

    `orth()` and `l2()` return the unweighted terms (the runner weighs them by λ1, λ2 and logs them by name);
    `terms()` gives those that apply: no orthogonality term on the first task, none whose λ is 0.
    """

    def __init__(self, model: torch.nn.Module, store: PrevAStore, lam_orth: float, lam_l2: float) -> None:
        self.modules = adapted_linears(model)
        if not self.modules:
            raise ValueError("O-LoRA: no LoRA-adapted linear layers found in the model")
        self.lam_orth = float(lam_orth)
        self.lam_l2 = float(lam_l2)
        self._prev: list[tuple[AdaptedLinear, torch.Tensor]] = []  # as stored (CPU)
        self._placed: list[torch.Tensor] = []  # the same, beside the new A's (device, dtype)
        self._placed_on: tuple[torch.device, torch.dtype] | None = None
        if not store.is_empty and self.lam_orth:
            missing = [m.name for m in self.modules if m.name not in store.prev]
            if missing:
                raise ValueError(f"O-LoRA: no earlier A matrices for {missing[:3]} (of {len(missing)})")
            self._prev = [(m, store.prev[m.name]) for m in self.modules]

    @property
    def has_orth(self) -> bool:
        return bool(self._prev)

    def _prev_beside_a(self) -> list[torch.Tensor]:
        """The earlier A's on the new A's device and in its dtype, copied once per placement of the model.

        Set-up runs before the Trainer moves the model, so nothing is placed then: the copy follows the
        parameters at the first step after each move (one copy, no per-step transfers).
        """
        a = self.modules[0].lora_A
        if self._placed_on != (a.device, a.dtype):
            self._placed = [p.to(m.lora_A.device, m.lora_A.dtype) for m, p in self._prev]
            self._placed_on = (a.device, a.dtype)
        return self._placed

    def orth(self) -> torch.Tensor:
        """L_orth = Σ_modules Σ_ij |A_prev · A_tᵀ|_ij (zero-free only from the second task on)."""
        if not self._prev:
            raise ValueError("O-LoRA: no earlier tasks' A matrices, the orthogonality term does not apply")
        placed = self._prev_beside_a()
        return torch.stack(
            [orthogonality_loss(p, m.lora_A) for (m, _), p in zip(self._prev, placed, strict=True)]
        ).sum()

    def l2(self) -> torch.Tensor:
        """L_l2 = Σ ||P||_F over the new LoRA's A and B matrices."""
        return l2_loss(t for m in self.modules for t in (m.lora_A, m.lora_B))

    def terms(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self._prev:
            out["olora_orth"] = self.orth()
        if self.lam_l2:
            out["olora_l2"] = self.l2()
        return out

    def loss(self) -> torch.Tensor | None:
        """λ1·L_orth + λ2·L_l2, or None when neither term applies (first task with λ2 = 0)."""
        t = self.terms()
        if not t:
            return None
        total = torch.zeros((), device=self.modules[0].lora_A.device)
        if "olora_orth" in t:
            total = total + self.lam_orth * t["olora_orth"]
        if "olora_l2" in t:
            total = total + self.lam_l2 * t["olora_l2"]
        return total
