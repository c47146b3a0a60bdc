"""`RegLoRATrainer`: a `transformers.Trainer` whose loss is CE + λ · RegLoRA penalty.

Why a subclass and not a custom loop: checkpointing, resume, DDP / DeepSpeed, bf16 autocast, length grouping
and the cosine schedule are the Trainer's. We only add two things, each small:
- `compute_loss` adds λ · penalty (from `sefe.sefe_train.reglora.penalty`), logged as `reglora_penalty`;
- `create_optimizer` builds two parameter groups: LoRA at `lr`, the projector at `projector_lr`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer

#: Substring identifying the multimodal projector's parameters (trained fully, own learning rate).
PROJECTOR_KEY = "multi_modal_projector"


class RegLoRATrainer(Trainer):
    """Trainer with an optional penalty callable (λ-free scalar) and a separate projector learning rate."""

    def __init__(
        self,
        *args: Any,
        penalty: Callable[[], torch.Tensor] | None = None,
        lam: float = 0.0,
        projector_lr: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.penalty = penalty
        self.lam = float(lam)
        self.projector_lr = projector_lr
        self._penalty_sum = 0.0
        self._penalty_count = 0

    # ---- loss hook -------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        out = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if self.penalty is None or self.lam == 0.0 or not model.training:
            return out
        loss, outputs = out if return_outputs else (out, None)
        pen = self.penalty()
        self._penalty_sum += float(pen.detach())
        self._penalty_count += 1
        # The Trainer divides an unscaled loss by the accumulation steps itself; a CE already normalised over
        # the whole accumulated batch is not divided, so the penalty must then be split across micro-steps.
        scaled_for_ga = (
            self.loss_is_scaled_for_ga
            if self.loss_is_scaled_for_ga is not None
            else (self.model_accepts_loss_kwargs and num_items_in_batch is not None)
            or self.compute_loss_func is not None
        )
        extra = self.lam * pen.to(loss.dtype)
        if scaled_for_ga:
            extra = extra / self.current_gradient_accumulation_steps
        loss = loss + extra
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._penalty_count and "loss" in logs:
            logs["reglora_penalty"] = self._penalty_sum / self._penalty_count
            self._penalty_sum, self._penalty_count = 0.0, 0
        super().log(logs, *args, **kwargs)

    # ---- sampling --------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length grouping from the dataset's precomputed `.lengths`: the default would load every image."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = getattr(dataset, "lengths", None)
        grouped = getattr(self.args, "train_sampling_strategy", None) == "group_by_length" or getattr(
            self.args, "group_by_length", False
        )
        if grouped and lengths is not None:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=list(lengths),
            )
        return super()._get_train_sampler(train_dataset)

    # ---- optimizer -------------------------------------------------------------------------------

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Two groups (LoRA, projector) with their own lr; the scheduler scales both alike."""
        if self.optimizer is not None or self.projector_lr is None:
            return super().create_optimizer(model) if self.optimizer is None else self.optimizer
        opt_model = self.model if model is None else model
        lora, projector = param_groups(opt_model)
        groups = [{"params": lora, "lr": self.args.learning_rate, "weight_decay": self.args.weight_decay}]
        if projector:
            groups.append(
                {"params": projector, "lr": self.projector_lr, "weight_decay": self.args.weight_decay}
            )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)  # each group carries its own
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def param_groups(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Split trainable parameters into (LoRA and anything else, projector)."""
    lora: list[torch.nn.Parameter] = []
    projector: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (projector if PROJECTOR_KEY in name else lora).append(p)
    return lora, projector
