"""`ContinualTrainer`: a `transformers.Trainer` whose loss is CE + Σ weight · term over a method's loss terms.

Why a subclass and not a custom loop: checkpointing, resume, DDP / DeepSpeed, bf16 autocast, length grouping
and the cosine schedule are the Trainer's. We only add small things:
- `compute_loss` adds each method's `LossTerm` (RegLoRA's penalty, O-LoRA's orthogonality, ...), each logged
  under its name, and can average the CE per device micro-batch as the release's transformers 4.37 did;
- `create_optimizer` builds two parameter groups: trained weights at `lr`, the projector at `projector_lr`;
- `_get_train_sampler` groups by length (or by modality and length, LLaVA's sampler) from precomputed lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from transformers import Trainer

from sefe.sefe_train.methods.base import LossTerm

#: Substring identifying the multimodal projector's parameters (trained fully, own learning rate).
PROJECTOR_KEY = "multi_modal_projector"
#: The logged name of RegLoRA's penalty when given as `penalty=` (the historical keyword).
PENALTY_NAME = "reglora_penalty"

LossAveraging = Literal["global_tokens", "micro_batch"]


class ContinualTrainer(Trainer):
    """Trainer with extra loss terms, a separate projector learning rate and a choice of CE averaging.

    `penalty` / `lam` are shorthand for one term named `reglora_penalty`; `trainer.lam` reads and sets its
    weight.
    """

    optimizer: torch.optim.Optimizer | None  # set by `Trainer.__init__` or `create_optimizer`

    def __init__(
        self,
        *args: Any,
        loss_terms: list[LossTerm] | None = None,
        penalty: Callable[[], torch.Tensor] | None = None,
        lam: float = 0.0,
        projector_lr: float | None = None,
        loss_averaging: LossAveraging = "global_tokens",
        group_by_modality_length: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.loss_terms: list[LossTerm] = list(loss_terms or [])
        if penalty is not None:
            self.loss_terms.append(LossTerm(PENALTY_NAME, penalty, float(lam)))
        self.projector_lr = projector_lr
        self.loss_averaging = loss_averaging
        self.group_by_modality_length = group_by_modality_length
        self._term_sums: dict[str, float] = {}
        self._term_counts: dict[str, int] = {}

    @property
    def lam(self) -> float:
        """Weight of the `reglora_penalty` term (0 when there is none)."""
        return next((t.weight for t in self.loss_terms if t.name == PENALTY_NAME), 0.0)

    @lam.setter
    def lam(self, value: float) -> None:
        for term in self.loss_terms:
            if term.name == PENALTY_NAME:
                term.weight = float(value)

    # ---- loss hook -------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        micro = self.loss_averaging == "micro_batch" and model.training
        out = super().compute_loss(
            model,
            inputs,
            return_outputs=return_outputs,
            num_items_in_batch=None if micro else num_items_in_batch,
        )
        loss: torch.Tensor
        loss, outputs = out if return_outputs else (out, None)
        if micro:
            # The model returned this micro-batch's token mean. `training_step` sees a global token count
            # and takes the loss as already divided by the accumulation steps: divide here, as 4.37 did.
            loss = loss / self.current_gradient_accumulation_steps
        terms = [t for t in self.loss_terms if t.weight != 0.0] if model.training else []
        if terms:
            # The Trainer divides an unscaled loss by the accumulation steps itself; a CE already normalised
            # over the whole accumulated batch is not divided, so the terms must then be split across
            # micro-steps (they count once per optimizer step either way).
            scaled_for_ga = micro or (
                self.loss_is_scaled_for_ga
                if self.loss_is_scaled_for_ga is not None
                else (self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                or self.compute_loss_func is not None
            )
            for term in terms:
                value = term.fn()
                self._term_sums[term.name] = self._term_sums.get(term.name, 0.0) + float(value.detach())
                self._term_counts[term.name] = self._term_counts.get(term.name, 0) + 1
                extra = term.weight * value.to(loss.dtype)
                if scaled_for_ga:
                    extra = extra / self.current_gradient_accumulation_steps
                loss = loss + extra
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._term_counts and "loss" in logs:
            for name, count in self._term_counts.items():
                logs[name] = self._term_sums[name] / count
            self._term_sums, self._term_counts = {}, {}
        super().log(logs, *args, **kwargs)

    # ---- sampling --------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length grouping from the dataset's precomputed lengths: the default would load every image."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        modality_lengths = getattr(dataset, "modality_lengths", None)
        if self.group_by_modality_length and modality_lengths is not None:
            from sefe.models.sampling import ModalityLengthGroupedSampler

            # LLaVA's arguments: per-device batch, and "world" = processes x accumulation steps, so every
            # device micro-batch of one optimizer step comes from one single-modality megabatch.
            return ModalityLengthGroupedSampler(
                modality_lengths,
                batch_size=self.args.train_batch_size,
                world_size=self.args.world_size * self.args.gradient_accumulation_steps,
            )
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
        """Two groups (trained weights, projector) with their own lr; the scheduler scales both alike."""
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


#: The historical name (RegLoRA was the first method with a loss term).
RegLoRATrainer = ContinualTrainer


def param_groups(model: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Split trainable parameters into (LoRA and anything else, projector)."""
    lora: list[torch.nn.Parameter] = []
    projector: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (projector if PROJECTOR_KEY in name else lora).append(p)
    return lora, projector
