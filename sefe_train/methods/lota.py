"""`lota`: Lottery Ticket Adaptation (Panda et al., 2024) in its continual form LoTTO: sparse task updates.

Per task: (1) calibrate: fine-tune the language model's linears (and the projector) for `calibration_steps`,
the earlier tasks' masked entries frozen (LoTTO, as the reference); (2) the task vector τ = W_calibrated -
W_before, in fp32 (DeepSpeed's fp32 masters under bf16), gives the mask, the top `keep_percent` % of |τ| (one
global threshold, as the reference), never an entry an earlier task's mask holds; (3) restore W_before and
train the task with gradients zeroed outside the mask (sefe_train/methods/_sparse_mask.py). Nothing is
merged: the sparsely trained model is the next task's base, and the masks' union is kept to exclude its
entries later.

Stage files: `lota_mask.safetensors` (this task's mask, written once calibration ends, so a resumed stage
trains with the same mask without calibrating again) and `lota_masks.safetensors` (the union over tasks
1..k); both in RegLoRA's packed-bitmask format (sefe_train/reglora/keys.py, one bit per weight).
"""

from __future__ import annotations

import re
import shutil
from typing import Any, ClassVar, Literal

from pydantic import Field

from sefe.sefe_train import run_layout as L
from sefe.sefe_train.config import ConfigError, RunConfig
from sefe.sefe_train.methods import register
from sefe.sefe_train.methods.base import ContinualMethod, MethodOptions, StageContext

MASK_FILE = "lota_mask.safetensors"
UNION_FILE = "lota_masks.safetensors"
CALIBRATION_DIR = ".lota_calibration"  # dot name: the runner removes it when the stage is complete


class LoTAOptions(MethodOptions):
    keep_percent: float = Field(
        1.0,
        gt=0,
        le=100,
        description="Percent of the target weights in a task's mask. Default 1: the reference's LoTTO "
        "example (kiddyboots216/lottery-ticket-adaptation, rlaif/scripts/continual_learning.sh: "
        "`sparsities=\"99\"`, 'we can fit both these tasks with 1% sparsity each without forgetting').",
    )
    calibration_steps: int = Field(
        100,
        gt=0,
        description="Optimizer steps of the calibration fine-tune. Our choice: the paper calibrates on 'a "
        "small fraction' of the data and fixes no count; 100 steps of the stage's batches.",
    )
    lr: float | None = Field(
        2e-5,
        gt=0,
        description="Learning rate of the language model weights (calibration and sparse training). Default "
        "2e-5: LLaVA-1.5's full fine-tuning rate, as `fft`; None: train.lr.",
    )
    scope: Literal["global", "per_matrix"] = Field(
        "global",
        description="'global': one magnitude threshold over all target weights (reference: save_mask.py); "
        "'per_matrix': keep_percent of every matrix.",
    )
    exclude_earlier: bool = Field(
        True,
        description="LoTTO: the earlier tasks' masked entries stay frozen during calibration and are never "
        "in a later task's mask (the reference calibrates task 2 with task 1's mask flipped). False: plain "
        "LoTA per task (calibration moves every weight, masks may overlap).",
    )


def adopt_fp32_masters(trainer: Any, params: dict[str, Any]) -> None:
    """Give every trained weight its fp32 value, so that τ = W_calibrated - W_before is taken in fp32.

    Without DeepSpeed the trained weights are fp32 already (bf16 is autocast). DeepSpeed's bf16 mode trains
    bf16 copies and keeps the fp32 masters in its optimizer: τ from the bf16 copies rounds most small
    updates away (ties at the threshold, a different mask), so each weight takes its master's value before
    the optimizer is freed. A collective under ZeRO: every rank calls it, in the same order.
    """
    import torch

    if not getattr(trainer, "is_deepspeed_enabled", False):
        low = sorted(n for n, p in params.items() if p.dtype != torch.float32)
        if low:
            raise RuntimeError(f"LoTA: trained weights {low[:3]} are not fp32; the task vector needs fp32")
        return
    from deepspeed.utils import safe_get_full_fp32_param

    for name, p in params.items():
        master = safe_get_full_fp32_param(p)
        if master is None:
            raise RuntimeError(f"LoTA: DeepSpeed holds no fp32 master of {name}; cannot compute τ in fp32")
        p.data = master.detach().to(p.device, torch.float32).reshape(p.shape)


def target_weights(model: Any, target_regex: str) -> dict[str, Any]:
    """module name -> weight of every nn.Linear whose name matches `target_regex` (re.fullmatch)."""
    import torch

    pat = re.compile(target_regex)
    found = {
        n: m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and pat.fullmatch(n)
    }
    if not found:
        raise ValueError(f"LoTA: no nn.Linear module matches lora.target_regex {target_regex!r}")
    return found


@register
class LoTA(ContinualMethod[LoTAOptions]):
    name = "lota"
    summary = (
        "calibrate, keep top-k% of the task vector as a mask, train only it; later masks disjoint (LoTTO)"
    )
    paper = "Panda et al., 2024, Lottery Ticket Adaptation (arXiv:2406.16797), continual form LoTTO"
    kept_between_tasks = (
        "the sparsely trained weights and the union of the tasks' masks (lota_masks.safetensors)"
    )
    options_cls: ClassVar[type[MethodOptions]] = LoTAOptions
    trained_dir: ClassVar[str | None] = None  # the trained model is saved as merged/ at once

    def __init__(self, cfg: RunConfig, options: LoTAOptions) -> None:
        super().__init__(cfg, options)
        if cfg.train.weight_decay:
            raise ConfigError(
                f"method lota: train.weight_decay={cfg.train.weight_decay} would move weights outside the "
                "mask (decoupled decay ignores gradients); use train.weight_decay=0"
            )
        self._processor: Any = None
        self._hooks: Any = None

    def learning_rate(self, ctx: StageContext) -> float:
        return self.cfg.train.lr if self.options.lr is None else float(self.options.lr)

    def load_base(self, ctx: StageContext) -> tuple[Any, Any]:
        model, processor = super().load_base(ctx)
        self._processor = processor  # the calibration run builds its own dataset
        return model, processor

    # ---- set-up: calibrate (once per stage), mask, freeze -------------------------------------------------

    def prepare_model(self, ctx: StageContext, model: Any) -> Any:
        import torch

        from sefe.sefe_train.methods._sparse_mask import GradientMask
        from sefe.sefe_train.stage_model import is_projector, projector_keys

        weights = target_weights(model, self.cfg.lora.target_regex)
        ids = {id(w) for w in weights.values()}
        train_proj = self.trains_projector()
        keys = projector_keys(self.cfg, model)
        trained = {
            n: p
            for n, p in model.named_parameters()
            if id(p) in ids or (train_proj and is_projector(n, keys))
        }
        for p in model.parameters():
            p.requires_grad_(False)
        masks = self._load_mask(ctx)
        snapshot = None
        if masks is None:
            snapshot = {n: p.detach().to("cpu", copy=True) for n, p in trained.items()}  # run dtype
        for p in trained.values():
            p.requires_grad_(True)
            if p.dtype != torch.float32:
                p.data = p.data.float()
        if masks is None:
            masks = self._calibrate(ctx, model, weights, trained, snapshot)
        self._hooks = GradientMask(weights, masks)
        return model

    def _load_mask(self, ctx: StageContext) -> dict[str, Any] | None:
        import torch

        from sefe.sefe_train.reglora.keys import KeyStore

        path = ctx.part / MASK_FILE
        if not path.exists():
            return None
        store = KeyStore.load(path)
        return {n: torch.from_numpy(store.mask(n).copy()) for n in store.module_names}

    def _earlier_union(self, ctx: StageContext) -> Any:
        from sefe.sefe_train.reglora.keys import KeyStore

        path = self.earlier_stage_file(ctx, UNION_FILE)
        return KeyStore.empty() if path is None else KeyStore.load(path)

    def _earlier_masks(self, ctx: StageContext) -> dict[str, Any] | None:
        """Union of the earlier tasks' masks per module (bool tensors), None when nothing is excluded."""
        import torch

        union = self._earlier_union(ctx)
        if not self.options.exclude_earlier or union.is_empty:
            return None
        return {n: torch.from_numpy(union.mask(n).copy()) for n in union.module_names}

    def _calibrate(
        self, ctx: StageContext, model: Any, weights: dict[str, Any], trained: dict[str, Any], snapshot: Any
    ) -> dict[str, Any]:
        """Fine-tune a few steps, take the task vector's top-k (LoTTO: outside earlier masks), restore."""
        import torch

        from sefe.sefe_train.distributed import free_memory, is_main_process
        from sefe.sefe_train.methods._sparse_mask import GradientMask, lottery_masks
        from sefe.sefe_train.reglora.keys import KeyStore
        from sefe.sefe_train.stage_model import train_collator, train_dataset
        from sefe.sefe_train.trainer import build_trainer

        o = self.options
        if self._processor is None:
            raise RuntimeError("LoTA: prepare_model needs load_base to have run (the processor)")
        cfg = self.cfg
        n_steps = o.calibration_steps
        if cfg.train.max_steps > 0:  # a capped stage (smoke run) is not out-calibrated
            n_steps = min(n_steps, cfg.train.max_steps)
        steps = cfg.train.model_copy(update={"max_steps": n_steps})
        cal_cfg = cfg.model_copy(update={"train": steps})
        dataset = train_dataset(cfg, ctx.task, self._processor)
        records = self.train_records(ctx, dataset.records)
        if records is not dataset.records:
            dataset.set_records(records)
        trainer = build_trainer(
            cal_cfg,
            model,
            self._processor,
            dataset,
            train_collator(cfg, self._processor),
            ctx.part / CALIBRATION_DIR,
            learning_rate=self.learning_rate(ctx),
            train_projector=self.trains_projector(),
        )
        from transformers.trainer_utils import SaveStrategy

        trainer.args.save_strategy = SaveStrategy.NO  # no checkpoint: a killed calibration just reruns
        exclude = self._earlier_masks(ctx)
        # LoTTO calibrates with the earlier tasks' entries frozen (the reference trains task 2's calibration
        # with task 1's mask flipped): their τ is 0, and the free entries move as they will in phase 3
        frozen = None
        if exclude is not None:
            free = {
                n: ~exclude[n] if n in exclude else torch.ones(w.shape, dtype=torch.bool)
                for n, w in weights.items()
            }
            frozen = GradientMask(weights, free)
        try:
            trainer.train()
            adopt_fp32_masters(trainer, trained)  # before the optimizer (DeepSpeed's masters) is freed
        finally:
            if frozen is not None:
                frozen.remove()
        del trainer
        free_memory()
        shutil.rmtree(ctx.part / CALIBRATION_DIR, ignore_errors=True)
        param_name = {id(p): n for n, p in trained.items()}

        def task_vector():  # one matrix at a time: W_calibrated - W_before, in fp32 on the weight's device
            for n, w in weights.items():
                before = snapshot[param_name[id(w)]].to(w.device, torch.float32)
                yield n, w.detach().float() - before

        masks = lottery_masks(task_vector, o.keep_percent, exclude=exclude, scope=o.scope)
        with torch.no_grad():  # phase 3 starts from the weights before calibration
            for n, p in trained.items():
                p.copy_(snapshot[n])
        if is_main_process():
            store = KeyStore(meta={"method": "lota", "keep_percent": repr(o.keep_percent), "scope": o.scope})
            store.add_task(masks.items(), "union")
            store.save(ctx.part / MASK_FILE)  # atomic: a resumed stage reuses exactly this mask
        return {n: m.cpu() for n, m in masks.items()}

    # ---- after training ---------------------------------------------------------------------------------

    def stage_files(self, ctx: StageContext) -> list[str]:
        return [UNION_FILE]

    def after_task(self, ctx: StageContext, model: Any) -> None:
        """Union of the masks of tasks 1..k = stage k-1's union OR this task's mask."""
        from sefe.sefe_train.reglora.keys import KeyStore

        mine = KeyStore.load(ctx.part / MASK_FILE)
        union = self._earlier_union(ctx)
        union.meta.update(method="lota")
        union.add_task(((n, mine.mask(n)) for n in mine.module_names), "union")
        union.save(ctx.part / UNION_FILE)

    def merge(self, ctx: StageContext, model: Any) -> Any:
        """Nothing to merge: the sparsely trained model is the next base (the gradient hooks go)."""
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None
        return model

    def reload_trained(self, ctx: StageContext) -> tuple[Any, Any]:
        """After a resume the trained model is `merged/` itself."""
        return self.load_merged(ctx, ctx.part / L.MERGED_DIR)
