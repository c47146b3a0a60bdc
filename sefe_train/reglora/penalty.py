"""The RegLoRA penalty: (1/n_modules) · Σ_modules mean_{keys} |(B·A)_key| (λ is applied by the trainer).

Computed module by module, each reduced to a scalar at once, so at most one module's temporaries are alive.
Two implementations share the result (see dense.py / sampled.py); `choose_impl` picks per device and density
from the measurements in docs/BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sefe.sefe_train.reglora.config import RegLoRAConfig
from sefe.sefe_train.reglora.dense import FlatPattern, dense_abs_mean
from sefe.sefe_train.reglora.keys import KeyStore
from sefe.sefe_train.reglora.modules import AdaptedLinear, adapted_linears
from sefe.sefe_train.reglora.sampled import CsrPattern, SampledAbsMean

# When the sampled computation wins, per device type, from `sefe bench reglora` at 7B shapes, rank 128
# (docs/BENCHMARKS.md). CPU: at 7B shapes sampled is faster at every measured density (2-14 %) and never uses
# more memory; at 1024² and 2048² it was no faster (fixed cost of the sparse calls), so matrices under 4M
# entries go dense. CUDA (H100): dense B·A then gather is 1.3-10x faster than the sampled kernels at every
# measured density and shape, so CUDA always goes dense (sampled there would only save memory).
SAMPLED_MAX_DENSITY: dict[str, float] = {"cpu": 0.5, "cuda": 0.0}
SAMPLED_MIN_NUMEL = 1 << 22


def choose_impl(device: torch.device, density: float, numel: int) -> str:
    """'sampled' or 'dense' for one module on this device type, from the measured rule above."""
    if numel < SAMPLED_MIN_NUMEL:
        return "dense"
    return "sampled" if density <= SAMPLED_MAX_DENSITY.get(device.type, 0.0) else "dense"


def module_weights(counts: np.ndarray | None) -> np.ndarray | None:
    """Concat counts -> weights of a mean over the reference's concatenated list; union -> None."""
    if counts is None:
        return None
    c = counts.astype(np.float64)
    return c / c.sum()


def build_pattern(
    flat: np.ndarray, shape: tuple[int, int], counts: np.ndarray | None, impl: str, device: torch.device
) -> FlatPattern | CsrPattern:
    """Index structures of one module's keys for `impl` ('auto' resolved here), on `device`."""
    if impl == "auto":
        numel = shape[0] * shape[1]
        impl = choose_impl(device, flat.size / numel, numel)
    factory = CsrPattern if impl == "sampled" else FlatPattern
    return factory.from_indices(flat, shape, module_weights(counts), device)


def module_penalty(
    lora_a: torch.Tensor, lora_b: torch.Tensor, pattern: FlatPattern | CsrPattern
) -> torch.Tensor:
    """mean_{keys} |(B·A)_key| of one module (count-weighted with concat), an fp32 scalar."""
    if isinstance(pattern, CsrPattern):
        return SampledAbsMean.apply(lora_a, lora_b, pattern)
    return dense_abs_mean(lora_a, lora_b, pattern)


@dataclass
class _Planned:
    item: AdaptedLinear
    pattern: FlatPattern | CsrPattern | None  # None: the module has no keys (still counts in n_modules)


class RegLoRAPenalty:
    """Callable penalty bound to one peft model and the keys accumulated before the current task.

    Index structures are built lazily on the parameters' device on the first call (and rebuilt if the
    model moves), so the trainer may construct this before `accelerate.prepare`.
    """

    def __init__(self, keystore: KeyStore, peft_model: nn.Module, cfg: RegLoRAConfig) -> None:
        self.keystore = keystore
        self.cfg = cfg
        self.modules = adapted_linears(peft_model)
        if not self.modules:
            raise ValueError("no LoRA-adapted linear layers found in the model")
        by_name = {m.name: m for m in self.modules}
        unknown = [n for n in keystore.module_names if n not in by_name]
        if unknown:
            raise ValueError(
                f"key store has modules the model does not adapt: {unknown[:3]}"
                f"{' ...' if len(unknown) > 3 else ''} (was the key file written for another model?)"
            )
        for name in keystore.module_names:
            if keystore.shape(name) != by_name[name].shape:
                have, want = keystore.shape(name), by_name[name].shape
                raise ValueError(f"{name}: keys have shape {have}, the model's weight is {want}")
        self._plans: list[_Planned] | None = None
        self._device: torch.device | None = None
        self.impls: dict[str, str] = {}

    @property
    def n_modules(self) -> int:
        return len(self.modules)

    @property
    def is_empty(self) -> bool:
        """True before the second task: the penalty is identically zero."""
        return self.keystore.is_empty

    def _build(self, device: torch.device) -> list[_Planned]:
        plans: list[_Planned] = []
        self.impls = {}
        for item in self.modules:
            if item.name not in self.keystore:
                plans.append(_Planned(item, None))
                continue
            flat = self.keystore.indices(item.name)
            counts = self.keystore.counts(item.name)
            pattern = build_pattern(flat, item.shape, counts, self.cfg.impl, device)
            plans.append(_Planned(item, pattern))
            self.impls[item.name] = "sampled" if isinstance(pattern, CsrPattern) else "dense"
        return plans

    def _ensure_built(self) -> list[_Planned]:
        device = self.modules[0].lora_B.device
        if self._plans is None or self._device != device:
            self._plans = self._build(device)
            self._device = device
        return self._plans

    def __call__(self) -> torch.Tensor:
        """The penalty without λ: an fp32 scalar on the parameters' device, differentiable wrt A and B."""
        plans = self._ensure_built()
        total = torch.zeros((), dtype=torch.float32, device=self._device)
        for plan in plans:
            if plan.pattern is None:
                continue
            term = module_penalty(plan.item.lora_A, plan.item.lora_B, plan.pattern)
            if self.cfg.reg_delta == "scaled":
                term = term * plan.item.scaling
            total = total + term
        return total / self.n_modules
