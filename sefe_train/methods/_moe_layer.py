"""CoIN's MoELoRA as a tuner: a per-module layer, its injection, and its state (zackschen/CoIN,
`CoIN/peft/tuners/coinmoelora.py`, scripts `scripts/LLaVA/Train_MOE/*.sh`).

Each adapted linear keeps its frozen base weight W and gets E LoRA experts that share the rank r: expert e has
A_e (r/E x in) and B_e (out x r/E), and a router G (E x in, no bias) gives per-token softmax weights g(x):

    y = W x + (alpha / r) · Σ_e g_e(x) · B_e A_e dropout(x),     g(x) = softmax(G x)

as in CoIN (scaling alpha / r with the *total* rank; A_e ~ N(0, 0.01²), B_e = 0, router: nn.Linear's default
init; CoIN defaults r = 128, alpha = 256, E = 8). Experts are stored stacked (E, r/E, in) and (E, out, r/E) so
the forward is two einsums instead of a Python loop over experts.

No merge: the router makes the update input-dependent, so Σ_e g_e(x) B_e A_e is not one fixed matrix and
cannot be folded into W (CoIN's own `merge()` is a no-op). The experts and router are saved on their own
(`moelora.safetensors`) and re-injected on load; the same experts continue training on the next task.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sefe.atomic import atomic_path

FORMAT = "sefe.moelora"
VERSION = "1"
_PARAM_NAMES = ("lora_A", "lora_B", "router.weight")


class MoELoRALinear(nn.Module):
    """A frozen `nn.Linear` plus E routed LoRA experts of rank r/E each."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, experts: int, dropout: float = 0.0) -> None:
        super().__init__()
        if experts < 1 or r % experts:
            raise ValueError(f"MoELoRA: rank r={r} must be a positive multiple of the expert count {experts}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.experts = r, float(alpha), experts
        self.scaling = self.alpha / r
        re_ = r // experts
        dev = base.weight.device
        self.lora_A = nn.Parameter(torch.empty(experts, re_, self.in_features, device=dev))
        self.lora_B = nn.Parameter(torch.zeros(experts, self.out_features, re_, device=dev))
        self.router = nn.Linear(self.in_features, experts, bias=False, device=dev)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.plain_state = False
        nn.init.normal_(self.lora_A, mean=0.0, std=0.01)

    def state_dict(
        self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False
    ) -> Any:
        """With `plain_state` on: the base linear's entries under this module's own name, no experts, so a
        saved model is a plain checkpoint (the experts are saved on their own)."""
        if self.plain_state:
            return self.base.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token router weights (..., E); they sum to one over the experts."""
        return torch.softmax(self.router(x.to(self.router.weight.dtype)), dim=-1)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """(alpha/r) · Σ_e g_e(x) B_e A_e dropout(x), in the adapter's dtype."""
        xa = x.to(self.lora_A.dtype)
        g = self.gates(x).to(self.lora_A.dtype)
        h = torch.einsum("...i,eki->...ek", self.dropout(xa), self.lora_A) * g.unsqueeze(-1)
        return torch.einsum("...ek,eok->...o", h, self.lora_B) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out + self.delta(x).to(out.dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, experts={self.experts}"


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def inject(
    model: nn.Module, target_regex: str, r: int, alpha: float, experts: int, dropout: float = 0.0
) -> list[str]:
    """Replace every `nn.Linear` whose full module name matches `target_regex` (re.fullmatch, as peft does
    for a string pattern) with a `MoELoRALinear`; returns the replaced names. Raises when nothing matches."""
    pat = re.compile(target_regex)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pat.fullmatch(n)]
    if not names:
        raise ValueError(f"MoELoRA: no nn.Linear module matches target_regex {target_regex!r}")
    for name in names:
        parent, child = _parent(model, name)
        base = getattr(parent, child)
        layer = MoELoRALinear(base, r, alpha, experts, dropout)
        setattr(parent, child, layer)
    return names


def layers(model: nn.Module) -> Iterator[tuple[str, MoELoRALinear]]:
    for name, m in model.named_modules():
        if isinstance(m, MoELoRALinear):
            yield name, m


def set_plain_state(model: nn.Module, plain: bool = True) -> nn.Module:
    """Make `model.state_dict()` (and so `save_pretrained`) hold the plain base weights only; training
    checkpoints need it off (the default), or the experts would be missing from them."""
    for _, layer in layers(model):
        layer.plain_state = plain
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """Put the plain base linears back (the experts are dropped from the module tree, not merged)."""
    for name, layer in list(layers(model)):
        parent, child = _parent(model, name)
        setattr(parent, child, layer.base)
    return model


def state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Experts and routers by module name: `<module>.lora_A`, `<module>.lora_B`, `<module>.router.weight`."""
    out: dict[str, torch.Tensor] = {}
    for name, layer in layers(model):
        out[f"{name}.lora_A"] = layer.lora_A.detach()
        out[f"{name}.lora_B"] = layer.lora_B.detach()
        out[f"{name}.router.weight"] = layer.router.weight.detach()
    return out


def load_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy saved experts/routers into an injected model; every key must match a layer and its shape."""
    found = dict(layers(model))
    want = {f"{n}.{p}" for n in found for p in _PARAM_NAMES}
    if set(state) != want:
        missing, extra = sorted(want - set(state)), sorted(set(state) - want)
        raise ValueError(
            f"MoELoRA state does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    with torch.no_grad():
        for name, layer in found.items():
            for pname, param in (
                ("lora_A", layer.lora_A),
                ("lora_B", layer.lora_B),
                ("router.weight", layer.router.weight),
            ):
                src = state[f"{name}.{pname}"]
                if src.shape != param.shape:
                    raise ValueError(
                        f"{name}.{pname}: saved shape {tuple(src.shape)} != {tuple(param.shape)}"
                    )
                param.copy_(src.to(param.device, param.dtype))


def save(model: nn.Module, path: str | os.PathLike[str], meta: dict[str, str] | None = None) -> None:
    """`moelora.safetensors`, atomically; metadata records r, alpha, experts and the module names."""
    from safetensors.torch import save_file

    found = dict(layers(model))
    if not found:
        raise ValueError("MoELoRA: the model has no MoELoRA layers to save")
    first = next(iter(found.values()))
    metadata = {
        **(meta or {}),
        "format": FORMAT,
        "version": VERSION,
        "r": str(first.r),
        "alpha": repr(first.alpha),
        "experts": str(first.experts),
        "modules": json.dumps(list(found)),
    }
    tensors = {k: v.to("cpu").contiguous() for k, v in state_dict(model).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a `moelora.safetensors`, checking the format."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a MoELoRA file (metadata 'format' is {meta.get('format')!r})")
        return {k: fh.get_tensor(k) for k in fh.keys()}, meta  # noqa: SIM118 - safe_open is not a dict
