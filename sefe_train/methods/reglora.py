"""`reglora`: SEFE's RegLoRA: LoRA per task, key positions of each ΔW kept, new updates penalised there.

The computations live in `sefe.sefe_train.reglora` (keys, penalty); this module only wires them into the
continual loop. Options are the `reglora:` section of the run config (`method_options.reglora.*` is the same
section under the generic name).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sefe.errors import MissingFile
from sefe.sefe_train import run_layout as L
from sefe.sefe_train.methods import register
from sefe.sefe_train.methods.base import LoRAMethod, StageContext
from sefe.sefe_train.reglora.config import RegLoRAConfig

if TYPE_CHECKING:
    from sefe.sefe_train.config import RunConfig
    from sefe.sefe_train.trainer import LossTerm

#: Logged name of the penalty (train_log.jsonl, progress bar).
PENALTY_LOG_NAME = "reglora_penalty"


@register
class RegLoRA(LoRAMethod[RegLoRAConfig]):
    name = "reglora"
    summary = "LoRA per task + penalty on earlier tasks' key positions (top M% of each ΔW), merged after it"
    paper = "Chen et al., SEFE, ICML 2025 (arXiv:2505.02486)"
    kept_between_tasks = "the merged weights and the key positions (keys.safetensors, accumulated)"
    options_cls = RegLoRAConfig

    @classmethod
    def read_options(cls, cfg: RunConfig) -> RegLoRAConfig:
        """The `reglora:` section (`method_options.reglora` is folded into it when the config loads)."""
        return cfg.reglora

    def prev_keys(self, ctx: StageContext) -> Path | None:
        """Keys accumulated over tasks 1..k-1 (stage k-1's file), None on stage 1."""
        if ctx.prev is None:
            return None
        path = ctx.prev / L.KEYS_FILE
        if not path.exists():
            raise MissingFile(
                f"{path}: key elements of stage {ctx.k - 1} are missing; cannot continue RegLoRA"
            )
        return path

    def loss_terms(self, ctx: StageContext, model: Any) -> list[LossTerm]:
        prev = self.prev_keys(ctx)
        if prev is None or self.options.lam <= 0:
            return []
        from sefe.sefe_train.reglora.keys import KeyStore
        from sefe.sefe_train.reglora.penalty import RegLoRAPenalty
        from sefe.sefe_train.trainer import LossTerm

        penalty = RegLoRAPenalty(KeyStore.load(prev), model, self.options)
        return [LossTerm(PENALTY_LOG_NAME, penalty, self.options.lam)]

    def stage_files(self, ctx: StageContext) -> list[str]:
        return [L.KEYS_FILE]

    def after_task(self, ctx: StageContext, model: Any) -> None:
        """Accumulated key positions after stage k = keys after k-1 + top-M% of this stage's ΔW."""
        from sefe.sefe_train.reglora.keys import KeyStore

        prev = self.prev_keys(ctx)
        store = KeyStore.load(prev) if prev is not None else KeyStore.empty()
        store.update_from_peft(model, self.options)
        store.save(ctx.part / L.KEYS_FILE)  # atomic: temp file + rename
