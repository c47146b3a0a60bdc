"""`fft`: full fine-tuning of the language model and the projector on every task; the vision tower frozen.

The row "FFT" of the SEFE paper's table (LLaVA-1.5's own fine-tuning recipe, task after task). Nothing is
merged: the trained model is the next task's base. Memory at 7B is what makes it different: all 6.7 B
language-model weights get gradients and Adam states, so multi-GPU runs need sharded optimiser states
(DeepSpeed ZeRO-2, configs/deepspeed/zero2.json, or FSDP); see docs/METHODS.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sefe.sefe_train.methods import register
from sefe.sefe_train.methods.base import ContinualMethod, MethodOptions, StageContext

#: Substrings of the vision tower's parameter names (frozen in every stage): LLaVA's and InternVL's
#: `vision_tower`, Qwen-VL's `visual.` (whose `visual.merger` is the projector and trains).
VISION_KEYS = ("vision_tower", "visual.")


class FFTOptions(MethodOptions):
    lr: float | None = Field(
        2e-5,
        gt=0,
        description="Learning rate of the language model. Default 2e-5: LLaVA-1.5's full fine-tuning "
        "script (scripts/v1_5/finetune.sh), which CoIN's FFT baseline uses; None: train.lr.",
    )


@register
class FFT(ContinualMethod[FFTOptions]):
    name = "fft"
    summary = "full fine-tuning of language model + projector on every task (vision tower frozen)"
    paper = "Liu et al., 2023 (LLaVA-1.5, arXiv:2310.03744) recipe, run task after task as in CoIN / SEFE"
    kept_between_tasks = "the fine-tuned weights"
    options_cls = FFTOptions
    trained_dir = None  # the trained model is saved as merged/ at once

    def prepare_model(self, ctx: StageContext, model: Any) -> Any:
        """Everything but the vision tower trains; trained weights in fp32 for the optimizer (as LoRA's)."""
        import torch

        from sefe.sefe_train.stage_model import is_projector, projector_keys

        keys = projector_keys(self.cfg, model)
        for name, p in model.named_parameters():
            vision = any(k in name for k in VISION_KEYS) and not is_projector(name, keys)
            p.requires_grad_(not vision)
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
        return model

    def learning_rate(self, ctx: StageContext) -> float:
        lr = self.options.lr
        return self.cfg.train.lr if lr is None else float(lr)

    def trains_projector(self) -> bool:
        return True
