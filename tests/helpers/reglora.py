"""A real peft-wrapped tiny Llama built from a config (no downloads), for the RegLoRA tests."""

from __future__ import annotations

import torch

LORA_TARGETS = (
    r".*layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))$"
)


def make_peft_llama(seed: int = 0, r: int = 4, alpha: int = 8, dtype: torch.dtype = torch.float32):
    """Tiny Llama (2 layers) with LoRA on all 7 linears per layer, B randomised so ΔW is non-zero."""
    from peft import LoraConfig, get_peft_model

    from tests.helpers.method_models import tiny_llama

    base = tiny_llama(seed, dtype)
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
    model = get_peft_model(base, lora)
    randomise_lora(model, seed)
    return model


def randomise_lora(model: torch.nn.Module, seed: int) -> None:
    """Give A and B fresh random values, as after some training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen).to(p.dtype))
