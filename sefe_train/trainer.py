"""`ContinualTrainer` and what feeds it: `LossTerm` (a method's extra loss) and `build_trainer` (the run
config as TrainingArguments), side by side as trl pairs its configs with its trainers.

Why a `transformers.Trainer` subclass and not a custom loop: checkpointing, resume, DDP / DeepSpeed, bf16
autocast, length grouping and the cosine schedule are the Trainer's. We only add small things:
- `compute_loss` adds each method's `LossTerm` (RegLoRA's penalty, O-LoRA's orthogonality, ...), each logged
  under its name, and can average the CE per device micro-batch as the release's transformers 4.37 did;
- `create_optimizer` builds two parameter groups: trained weights at `lr`, the projector at `projector_lr`;
- `_get_train_sampler` groups by length (or by modality and length, LLaVA's sampler) from precomputed lengths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import Trainer

from sefe.sefe_train.config import RunConfig, TrainOptions
from sefe.sefe_train.distributed import world_size
from sefe.sefe_train.stage_model import projector_keys

#: Substring identifying LLaVA's multimodal projector's parameters (trained fully, own learning rate); other
#: families name theirs (`ModelFamily.projector_modules`, passed as `projector_keys`).
PROJECTOR_KEY = "multi_modal_projector"

LossAveraging = Literal["global_tokens", "micro_batch"]


@dataclass
class LossTerm:
    """One extra loss term: `weight * fn()` is added to the cross-entropy at every training step.

    `fn` returns the unweighted scalar (it reads the model's parameters, or state its modules captured in the
    forward pass); the trainer logs its mean since the last log line under `name`. A term whose weight is 0
    is neither computed nor logged.
    """

    name: str
    fn: Callable[[], torch.Tensor]
    weight: float = 1.0


class ContinualTrainer(Trainer):
    """Trainer with extra loss terms, a separate projector learning rate and a choice of CE averaging."""

    optimizer: torch.optim.Optimizer | None  # set by `Trainer.__init__` or `create_optimizer`

    def __init__(
        self,
        *args: Any,
        loss_terms: Sequence[LossTerm] = (),
        projector_lr: float | None = None,
        loss_averaging: LossAveraging = "global_tokens",
        group_by_modality_length: bool = False,
        projector_keys: Sequence[str] = (PROJECTOR_KEY,),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.projector_keys = tuple(projector_keys)
        self.loss_terms: list[LossTerm] = list(loss_terms)
        self.projector_lr = projector_lr
        self.loss_averaging = loss_averaging
        self.group_by_modality_length = group_by_modality_length
        self._term_sums: dict[str, float] = {}
        self._term_counts: dict[str, int] = {}

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
        lora, projector = param_groups(opt_model, self.projector_keys)
        groups = [{"params": lora, "lr": self.args.learning_rate, "weight_decay": self.args.weight_decay}]
        if projector:
            groups.append(
                {"params": projector, "lr": self.projector_lr, "weight_decay": self.args.weight_decay}
            )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)  # each group carries its own
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


def param_groups(
    model: torch.nn.Module, projector_keys: Sequence[str] = (PROJECTOR_KEY,)
) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """Split trainable parameters into (LoRA and anything else, projector: names containing a key)."""
    lora: list[torch.nn.Parameter] = []
    projector: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (projector if any(key in name for key in projector_keys) else lora).append(p)
    return lora, projector


# ---- the run config as TrainingArguments ---------------------------------------------------------------


def build_trainer(
    cfg: RunConfig,
    model: Any,
    processor: Any,
    dataset: Any,
    collator: Any,
    output_dir: Path,
    callbacks: Sequence[Any] = (),
    *,
    loss_terms: Sequence[LossTerm] = (),
    learning_rate: float | None = None,
    train_projector: bool | None = None,
) -> ContinualTrainer:
    """TrainingArguments from the config (every option passed through) and the continual trainer.

    `learning_rate` / `train_projector`: the method's answers (default: `train.lr`, `lora.train_projector`).
    """
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    t = cfg.train
    # No accelerator: say so explicitly (bf16 autocast on CPU, and torchrun on CPU runs gloo DDP)
    accel = torch.cuda.is_available() or torch.backends.mps.is_available()
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        use_cpu=not accel,
        ddp_backend="gloo" if not accel and world_size() > 1 else None,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.grad_accum(world_size()),
        learning_rate=t.lr if learning_rate is None else learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=cfg.model.dtype == "bf16",
        fp16=cfg.model.dtype == "fp16",
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps,
        seed=t.seed,
        dataloader_num_workers=t.dataloader_num_workers,
        remove_unused_columns=False,
        report_to=t.report_to,
        deepspeed=t.deepspeed,
        ddp_find_unused_parameters=True,  # text-only batches leave the projector without gradients
        disable_tqdm=True,  # rich progress instead (sefe_train/progress.py)
        dataloader_pin_memory=accel,
    )
    kwargs.update(tf32_kwargs(t, cuda=torch.cuda.is_available()))
    kwargs.update(_version_dependent_args(t))
    args = TrainingArguments(**kwargs)
    projector = cfg.lora.train_projector if train_projector is None else train_projector
    trainer = ContinualTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=list(callbacks),
        loss_terms=loss_terms,
        projector_lr=t.projector_lr if projector else None,
        loss_averaging=t.loss_averaging,
        group_by_modality_length=t.group_by_modality_length,
        projector_keys=projector_keys(cfg, model),
    )
    trainer.remove_callback(PrinterCallback)  # logs go to the progress bar and train_log.jsonl
    return trainer


def tf32_kwargs(t: TrainOptions, cuda: bool) -> dict[str, Any]:
    """`tf32` for TrainingArguments when set and on CUDA (transformers refuses it elsewhere)."""
    return {"tf32": t.tf32} if t.tf32 is not None and cuda else {}


def _version_dependent_args(t: TrainOptions) -> dict[str, Any]:
    """Names that moved inside transformers 5.x: use whichever this installation has."""
    from transformers import TrainingArguments

    have = {f.name for f in dataclasses.fields(TrainingArguments)}
    out: dict[str, Any] = {}
    ck_kwargs = {"use_reentrant": False} if t.gradient_checkpointing else None
    if "activation_checkpointing" in have:
        out.update(
            activation_checkpointing=t.gradient_checkpointing, activation_checkpointing_kwargs=ck_kwargs
        )
    else:
        out.update(gradient_checkpointing=t.gradient_checkpointing, gradient_checkpointing_kwargs=ck_kwargs)
    if "train_sampling_strategy" in have:
        out["train_sampling_strategy"] = "group_by_length" if t.group_by_length else "random"
    else:
        out["group_by_length"] = t.group_by_length
    if "warmup_ratio" in have:
        out["warmup_ratio"] = t.warmup_ratio
    else:
        out["warmup_steps"] = t.warmup_ratio  # a float in [0, 1) is a ratio of the total steps
    return out
