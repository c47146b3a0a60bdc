"""Find the LoRA-adapted linears of a (possibly DDP-wrapped) peft model, named as in the base model.

Keys are stored under the base model's module names (`model.language_model.layers.0.self_attn.q_proj`), so a
key file stays valid whatever wrapper (peft, DDP, torch.compile) held the model when it was written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_PEFT_PREFIX = "base_model.model."


def base_name(peft_name: str) -> str:
    """Map a module name inside a peft/DDP wrapper to its name in the plain base model."""
    name = peft_name
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                changed = True
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX) :]
    return name


@dataclass(frozen=True)
class AdaptedLinear:
    """One LoRA-adapted linear: ΔW = B·A has the base weight's (out, in) shape."""

    name: str
    layer: nn.Module
    adapter: str

    @property
    def lora_A(self) -> torch.Tensor:  # (r, in)
        return self.layer.lora_A[self.adapter].weight

    @property
    def lora_B(self) -> torch.Tensor:  # (out, r)
        return self.layer.lora_B[self.adapter].weight

    @property
    def scaling(self) -> float:
        return float(self.layer.scaling[self.adapter])

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.layer.out_features), int(self.layer.in_features))


def _check_params_present(item: AdaptedLinear) -> None:
    """ZeRO-3 partitions parameters to empty placeholders; B·A would silently be wrong."""
    a, b = item.lora_A, item.lora_B
    if a.numel() == 0 or b.numel() == 0 or hasattr(a, "ds_id"):
        raise RuntimeError(
            f"LoRA parameters of {item.name} are partitioned (DeepSpeed ZeRO-3?); RegLoRA needs whole "
            "parameters: gather them (deepspeed.zero.GatheredParameters) or use DDP / ZeRO-2."
        )


def adapted_linears(model: nn.Module) -> list[AdaptedLinear]:
    """All LoRA-adapted linears with their active adapter, in module order.

    Raises on layers RegLoRA cannot treat as ΔW = B·A of an (out, in) weight (DoRA, fan_in_fan_out, several
    active adapters), naming the module.
    """
    from peft.tuners.lora.layer import Linear as LoraLinear

    found: list[AdaptedLinear] = []
    for peft_name, layer in model.named_modules():
        if not isinstance(layer, LoraLinear):
            continue
        active = [a for a in layer.active_adapters if a in layer.lora_A]
        if not active:
            continue
        name = base_name(peft_name)
        if len(active) > 1:
            raise ValueError(f"{name}: several active LoRA adapters {active}; RegLoRA expects one.")
        adapter = active[0]
        if getattr(layer, "fan_in_fan_out", False):
            raise ValueError(f"{name}: fan_in_fan_out LoRA layers are not supported by RegLoRA.")
        if layer.use_dora.get(adapter, False):
            raise ValueError(f"{name}: DoRA adapters are not supported by RegLoRA (ΔW is not B·A).")
        item = AdaptedLinear(name=name, layer=layer, adapter=adapter)
        _check_params_present(item)
        found.append(item)
    return found
