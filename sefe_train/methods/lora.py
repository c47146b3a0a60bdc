"""`lora`: sequential LoRA, the SEFE paper's baseline: one fresh LoRA per task, merged after it."""

from __future__ import annotations

from sefe.sefe_train.methods import register
from sefe.sefe_train.methods.base import LoRAMethod, MethodOptions


@register
class LoRA(LoRAMethod[MethodOptions]):
    """Nothing but the `lora:` section: r, alpha, dropout, targets (SEFE's defaults: 128, 256, 0.05)."""

    name = "lora"
    summary = "one fresh LoRA per task on the language model, merged into the weights after the task"
    paper = "Hu et al., 2021 (LoRA, arXiv:2106.09685); sequential use as in SEFE, Chen et al., ICML 2025"
    kept_between_tasks = "the merged weights"
