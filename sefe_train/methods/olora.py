"""`olora`: O-LoRA (Wang et al., 2023): a fresh LoRA per task, trained orthogonal to the earlier tasks' A's.

Loss of task t: CE + λ1 · Σ_modules Σ_{t'<t} Σ_ij |A_t' · A_tᵀ|_ij + λ2 · Σ ||P||_F over the new LoRA's A, B
(sefe_train/methods/_orthogonal.py). After the task its A matrices join the earlier ones in
`olora_prev_a.safetensors` and the LoRA is merged like plain LoRA; the reference keeps earlier LoRAs unmerged
beside the new one, which gives the same forward pass (merging is exact), so only the A's need keeping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from sefe.sefe_train.methods import register
from sefe.sefe_train.methods.base import LoRAMethod, MethodOptions, StageContext

if TYPE_CHECKING:
    from sefe.sefe_train.trainer import LossTerm

#: Stage file: the A matrices of tasks 1..k, stacked per adapted linear.
PREV_A_FILE = "olora_prev_a.safetensors"
ORTH_LOG_NAME = "olora_orth"
L2_LOG_NAME = "olora_l2"


#: The anchor of the default λ1: MCITlib's LLaVA port of O-LoRA (Ghy0501/MCITlib, LLaVA/OLoRA/llava/train/
#: llava_trainer.py: `loss + 0.05 * orthogonal_loss`) at its rank per task (configs/train_configs/OLoRA/LLaVA:
#: rank 96 over expert_num 6 tasks = 16).
PORT_LAM_ORTH = 0.05
PORT_RANK = 16


def scaled_lam_orth(r: int) -> float:
    """λ1 = 0.05 · (16 / r)²: the port's weight, rescaled so the term starts at the same size against the CE.

    L_orth sums r_prev x r entries |a_prev · a_t| per adapted linear and earlier task; at initialisation each
    entry's size depends on in_features, not on r (peft's kaiming-uniform rows), so the term grows as r².
    At SEFE's r = 128 on all 224 linears it starts near 7e3 per earlier task: 0.5 (the T5 scripts' λ1 at
    r = 8 on q/v) would make it ~3500x the cross-entropy; this rule gives 7.8e-4 (≈ 5.5x, as the port's).
    """
    return PORT_LAM_ORTH * (PORT_RANK / r) ** 2


class OLoRAOptions(MethodOptions):
    lam_orth: float | None = Field(
        None,
        ge=0,
        description="λ1, weight of the orthogonality loss. Default None: 0.05 · (16 / lora.r)², MCITlib's "
        "LLaVA port (λ1 0.05 at rank 16 per task) rescaled by the term's r² growth (7.8e-4 at r 128). "
        "The O-LoRA T5 scripts' 0.5 (cmnfriend/O-LoRA, --lamda_1 0.5) was set for rank 8 on q/v.",
    )
    lam_l2: float = Field(
        0.0,
        ge=0,
        description="λ2, weight of Σ ||P||_F over the new LoRA's A and B. Default 0: the reference scripts "
        "(--lamda_2 0).",
    )
    prev_dtype: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="dtype of the stored earlier A's (file and GPU copy). Our choice: fp32 like the new A; "
        "bf16 halves their memory.",
    )


@register
class OLoRA(LoRAMethod[OLoRAOptions]):
    name = "olora"
    summary = (
        "LoRA per task, its A kept orthogonal to earlier tasks' A's (λ1·Σ|A_prev A_tᵀ|), merged after it"
    )
    paper = "Wang et al., 2023, O-LoRA (EMNLP Findings 2023, arXiv:2310.14152)"
    kept_between_tasks = "the merged weights and every earlier task's lora_A (olora_prev_a.safetensors)"
    options_cls: ClassVar[type[MethodOptions]] = OLoRAOptions

    def _store(self, ctx: StageContext) -> Any:
        from sefe.sefe_train.methods._orthogonal import PrevAStore

        path = self.earlier_stage_file(ctx, PREV_A_FILE)
        return PrevAStore() if path is None else PrevAStore.load(path)

    @property
    def lam_orth(self) -> float:
        """λ1 in effect: the option, or the rank-scaled default."""
        lam = self.options.lam_orth
        return scaled_lam_orth(self.cfg.lora.r) if lam is None else float(lam)

    def loss_terms(self, ctx: StageContext, model: Any) -> list[LossTerm]:
        from sefe.sefe_train.methods._orthogonal import OLoRARegularizer
        from sefe.sefe_train.trainer import LossTerm

        o = self.options
        lam_orth = self.lam_orth
        if (ctx.k == 1 or lam_orth == 0) and o.lam_l2 == 0:
            return []
        reg = OLoRARegularizer(model, self._store(ctx), lam_orth, o.lam_l2)
        terms = []
        if reg.has_orth:
            terms.append(LossTerm(ORTH_LOG_NAME, reg.orth, lam_orth))
        if o.lam_l2:
            terms.append(LossTerm(L2_LOG_NAME, reg.l2, o.lam_l2))
        return terms

    def stage_files(self, ctx: StageContext) -> list[str]:
        return [PREV_A_FILE]

    def after_task(self, ctx: StageContext, model: Any) -> None:
        """A's of tasks 1..k = stage k-1's file + this task's lora_A (before the merge)."""
        import torch

        from sefe.sefe_train.reglora.modules import adapted_linears

        dtype = torch.float32 if self.options.prev_dtype == "fp32" else torch.bfloat16
        store = self._store(ctx).add_task(adapted_linears(model), dtype=dtype)
        store.save(ctx.part / PREV_A_FILE)  # atomic: temp file + rename
