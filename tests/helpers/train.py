"""The trainer and continual-method tests' shared parts: fast settings, config maker, callbacks, tiny cache.

`private_cache` is an autouse fixture: a conftest that imports it gets a per-session tiny-model cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[2]
COIN_MINI = REPO / "data" / "coin-mini"
TASKS = ["ScienceQA", "TextVQA"]

#: Fast settings for the tiny model: small batches, a step cap; a strong λ makes the RegLoRA effect clear.
FAST = [
    "train.global_batch_size=2",
    "train.per_device_batch_size=2",
    "train.max_length=192",
    "train.lr=5e-3",
    "train.projector_lr=1e-3",
    "train.logging_steps=1",
    "train.save_steps=1000",
    "eval.max_samples=2",
    "eval.max_new_tokens=3",
    "eval.batch_size=2",
]
STEPS = 12
LAM = 1e5


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Build the tiny models into a per-session cache (subprocesses inherit it through the environment); the
    fetched vocabularies stay where they are (`SEFE_VOCAB_DIR`), since the tiny Qwen needs the real one."""
    from sefe.models.vocab import vocab_dir

    old = {k: os.environ.get(k) for k in ("SEFE_CACHE", "SEFE_VOCAB_DIR")}
    os.environ["SEFE_VOCAB_DIR"] = str(vocab_dir())
    os.environ["SEFE_CACHE"] = str(tmp_path_factory.mktemp("sefe-cache"))
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass
class Recorder(TrainerCallback):
    """Records what the Trainer saw: logs, the first step, optimizer groups, the model at the start."""

    logs: list[dict[str, float]] = field(default_factory=list)
    begins: list[dict[str, Any]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.begins.append(
            {
                "args": args,
                "global_step": state.global_step,
                "model": model,
                "group_lrs": [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
                if optimizer
                else [],
                # snapshot now: merging after training mutates the model in place
                "trained_dtypes": {p.dtype for p in model.parameters() if p.requires_grad},
                "frozen_lm_dtypes": {
                    p.dtype
                    for n, p in model.named_parameters()
                    if not p.requires_grad and "language_model" in n
                },
                "attn": model.get_base_model().model.language_model.config._attn_implementation,
                "checkpointing": model.get_base_model().model.language_model.gradient_checkpointing,
            }
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def make_config(out: Path, method: str, extra: list[str] | None = None, tasks: list[str] | None = None):
    from sefe.sefe_train.config import load_config, select_tasks

    cfg = load_config(None, [f"output_dir={out}", f"method={method}", *FAST, *(extra or [])])
    return select_tasks(cfg, tasks or TASKS)


@dataclass
class TwoTaskRuns:
    reglora: Path
    lora: Path
    reglora_rec: Recorder
    lora_rec: Recorder
