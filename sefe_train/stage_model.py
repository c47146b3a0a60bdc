"""What a continual method builds on: the model a stage starts from, and a fresh LoRA on it.

Why apart from the runner: the runner calls the methods' hooks, and the default hooks need these two
building blocks; with them here, `methods/` never imports the runner that calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sefe.sefe_train.config import RunConfig


def model_source(cfg: RunConfig, base: Path | None) -> Any:
    """Stage 1 loads the configured source; stage k>1 loads the merged folder of stage k-1."""
    from sefe.models.llava import ModelSource

    m = cfg.model
    if base is not None:
        return ModelSource(hf=str(base))
    if m.path == "tiny":
        return ModelSource(tiny=True)
    if m.path is not None:
        return ModelSource(hf=m.path)
    return ModelSource(llm=m.llm, vision=m.vision, projector=m.projector)


def load_base(cfg: RunConfig, base: Path | None) -> tuple[Any, Any]:
    """(model, processor) in the run's dtype: the configured model (`base` None) or a `merged/` folder."""
    from sefe.models.llava import load_llava, torch_dtype

    m = cfg.model
    source = model_source(cfg, base)
    return load_llava(source, dtype=torch_dtype(m.dtype), attn_implementation=m.attn_implementation)


def lora_config(cfg: RunConfig) -> Any:
    """peft's LoraConfig of the `lora:` section (the projector trained fully beside it when configured)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_regex,
        modules_to_save=["multi_modal_projector"] if cfg.lora.train_projector else None,
        bias="none",
    )


def add_fresh_lora(cfg: RunConfig, model: Any) -> Any:
    """A new adapter for this task; trainable parameters are kept in fp32 for the optimizer."""
    import torch
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(cfg))
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return peft_model
