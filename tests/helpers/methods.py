"""The continual-method tests' recorder (any method, peft-wrapped or not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback


@dataclass
class MethodRecorder(TrainerCallback):
    """What the Trainer saw, for any method (peft-wrapped or not): trained names, lr groups, dataset size."""

    begins: list[dict[str, Any]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    logs: list[dict[str, float]] = field(default_factory=list)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kw):
        self.begins.append(
            {
                "global_step": state.global_step,
                "model": model,
                "trained": {n for n, p in model.named_parameters() if p.requires_grad},
                "group_lrs": [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
                if optimizer
                else [],
                "n_train": len(train_dataloader.dataset) if train_dataloader is not None else None,
            }
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))
