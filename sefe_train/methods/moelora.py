"""`moelora`: CoIN's MoELoRA (Chen et al., 2024): E LoRA experts per adapted linear sharing the rank, mixed by
a per-token softmax router; the same experts and routers continue from task to task.

The layer and its state live in `sefe_train/methods/_moe_layer.py`. The routed update depends on the input, so
it cannot be merged into the weights (CoIN's merge is a no-op too). What a stage folder holds instead:
- `moelora/experts.safetensors`: the trained experts and routers, plus the projector (the stage's artefact,
  reused on resume);
- `moelora.safetensors`: the experts and routers after task k, kept for task k+1 (same tensors, a stage file);
- `merged/`: a plain LLaVA checkpoint with everything that can be merged: the base weights (unchanged) and the
  trained projector. Loading a stage (`load_merged`) reads `merged/` and re-injects the experts beside it.
  It is not the whole model, and its `config.json` says so (`sefe_incomplete`): `sefe eval run --model
  <stage>/merged` refuses it, `sefe eval run --model <stage>` evaluates the stage with its experts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from sefe.sefe_train.methods import register
from sefe.sefe_train.methods.base import ContinualMethod, MethodOptions, StageContext

TRAINED_DIR = "moelora"
TRAINED_FILE = "experts.safetensors"
#: Stage file: experts and routers after task k (the state the next task continues from).
EXPERTS_FILE = "moelora.safetensors"
_PROJ_PREFIX = "projector:"


class MoELoRAOptions(MethodOptions):
    experts: int = Field(
        8,
        ge=1,
        description="E, LoRA experts per adapted linear; they share the rank `lora.r` (r/E each). Default 8: "
        "CoIN's MoELoRA scripts (zackschen/CoIN, scripts/LLaVA/Train_MOE/*.sh: --expert_num 8, lora_r 128).",
    )


@register
class MoELoRA(ContinualMethod[MoELoRAOptions]):
    name = "moelora"
    summary = (
        "E LoRA experts per linear sharing rank r, per-token softmax router; experts continue across tasks"
    )
    paper = "Chen et al., 2024, CoIN (NeurIPS 2024 Datasets and Benchmarks, arXiv:2403.08350), MoELoRA"
    kept_between_tasks = (
        "the experts and routers (moelora.safetensors; not mergeable) and the trained projector (merged/)"
    )
    options_cls: ClassVar[type[MethodOptions]] = MoELoRAOptions
    trained_dir: ClassVar[str | None] = TRAINED_DIR

    @property
    def experts(self) -> int:
        return self.options.experts

    # ---- model ------------------------------------------------------------------------------------------

    def _inject(self, model: Any) -> Any:
        from sefe.sefe_train.methods import _moe_layer as M

        lo = self.cfg.lora
        if not list(M.layers(model)):
            M.inject(model, lo.target_regex, r=lo.r, alpha=lo.alpha, experts=self.experts, dropout=lo.dropout)
        return model

    def _load_stage(self, folder: Path, cast: bool) -> tuple[Any, Any]:
        """`merged/` (base weights + projector) with the experts of the same stage folder re-injected; in the
        run's dtype for evaluation (`cast`), in their saved fp32 to continue training from."""
        import torch

        from sefe.models.llava import torch_dtype
        from sefe.sefe_train.methods import _moe_layer as M
        from sefe.sefe_train.stage_model import load_base

        model, processor = load_base(self.cfg, folder)
        path = folder.parent / EXPERTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: the MoELoRA experts of {folder.parent.name} are missing")
        state, _ = M.load(path)
        self._inject(model)
        M.load_state_dict(model, state)
        from sefe.sefe_train.stage_folder import INCOMPLETE_KEY

        if hasattr(model.config, INCOMPLETE_KEY):  # whole again: a model saved from it is not incomplete
            delattr(model.config, INCOMPLETE_KEY)
        dtype = torch_dtype(self.cfg.model.dtype) if cast else torch.float32
        for _, layer in M.layers(model):
            layer.lora_A.data = layer.lora_A.data.to(dtype)
            layer.lora_B.data = layer.lora_B.data.to(dtype)
            layer.router.to(dtype)
        return model, processor

    def load_merged(self, ctx: StageContext, folder: Path) -> tuple[Any, Any]:
        """A stage's model as evaluated: its `merged/` plus its experts, all in the run's dtype."""
        return self._load_stage(folder, cast=True)

    def load_base(self, ctx: StageContext) -> tuple[Any, Any]:
        """Stage 1: the configured model; stage k: stage k-1's model with its experts kept in fp32 (no
        rounding of the experts between tasks)."""
        if ctx.prev_merged is None:
            return super().load_base(ctx)
        return self._load_stage(ctx.prev_merged, cast=False)

    def prepare_model(self, ctx: StageContext, model: Any) -> Any:
        """Experts (fresh on stage 1, stage k-1's otherwise: `load_base` brought them) and routers train in
        fp32, the projector beside them when `lora.train_projector`; everything else is frozen."""
        import torch

        from sefe.sefe_train.stage_model import is_projector, projector_keys

        self._inject(model)
        train_proj = self.trains_projector()
        keys = projector_keys(self.cfg, model)
        for name, p in model.named_parameters():
            trained = any(k in name for k in (".lora_A", ".lora_B", ".router.")) or (
                train_proj and is_projector(name, keys)
            )
            p.requires_grad_(trained)
            if trained and p.dtype != torch.float32:
                p.data = p.data.float()
        return model

    # ---- after training ---------------------------------------------------------------------------------

    def _trained_state(self, model: Any) -> dict[str, Any]:
        from sefe.sefe_train.methods import _moe_layer as M
        from sefe.sefe_train.stage_model import is_projector, projector_keys

        state = {k: v.float() for k, v in M.state_dict(model).items()}
        keys = projector_keys(self.cfg, model)
        for name, p in model.named_parameters():
            if is_projector(name, keys):
                state[_PROJ_PREFIX + name] = p.detach().float()
        return state

    def save_trained(self, ctx: StageContext, model: Any, folder: Path) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.to("cpu").contiguous() for k, v in self._trained_state(model).items()}
        save_file(tensors, str(folder / TRAINED_FILE), metadata={"format": "sefe.moelora.trained"})

    def reload_trained(self, ctx: StageContext) -> tuple[Any, Any]:
        """Stage k's trained model after a resume: its base, injected, with the saved experts, projector."""
        import torch
        from safetensors.torch import load_file

        from sefe.sefe_train.methods import _moe_layer as M

        model, processor = self.load_base(ctx)
        model = self.prepare_model(ctx, model)
        saved = load_file(str(ctx.part / TRAINED_DIR / TRAINED_FILE))
        experts = {k: v for k, v in saved.items() if not k.startswith(_PROJ_PREFIX)}
        M.load_state_dict(model, experts)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, value in saved.items():
                if key.startswith(_PROJ_PREFIX):
                    params[key.removeprefix(_PROJ_PREFIX)].copy_(value)
        return model, processor

    def stage_files(self, ctx: StageContext) -> list[str]:
        return [EXPERTS_FILE]

    def after_task(self, ctx: StageContext, model: Any) -> None:
        from sefe.sefe_train.methods import _moe_layer as M

        M.save(model, ctx.part / EXPERTS_FILE, meta={"task": ctx.task.name, "stage": str(ctx.k)})

    def merge(self, ctx: StageContext, model: Any) -> Any:
        """Nothing merges (the update is input-dependent); `merged/` gets the plain weights, the in-memory
        model keeps its experts for the evaluation that follows."""
        from sefe.sefe_train.methods import _moe_layer as M
        from sefe.sefe_train.stage_folder import INCOMPLETE_KEY

        M.set_plain_state(model, True)
        # `merged/` is not the whole model: its config says so, and `sefe eval run` refuses it by itself
        setattr(
            model.config,
            INCOMPLETE_KEY,
            {"method": self.name, "missing": "the MoELoRA experts and routers", "file": EXPERTS_FILE},
        )
        return model
