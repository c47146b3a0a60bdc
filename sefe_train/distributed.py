"""Process topology, DeepSpeed check and memory release: what the runner and the methods share about ranks.

Why a module of its own: a method that trains inside a stage (LoTA's calibration) needs the same answers as
the runner (which rank writes, when to free the GPU) without importing the runner that calls it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sefe.sefe_train.config import ConfigError, RunConfig


def world_size() -> int:
    """Processes of this run (torchrun / accelerate set WORLD_SIZE; 1 without them)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0: the only process that writes run files."""
    return int(os.environ.get("RANK", "0")) == 0


def check_deepspeed(cfg: RunConfig) -> None:
    """ZeRO-3 shards the LoRA weights, so the penalty would read empty shards: refuse it clearly."""
    stage = None
    if cfg.train.deepspeed:
        path = Path(cfg.train.deepspeed)
        try:
            ds = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"train.deepspeed: cannot read {path}: {exc}") from exc
        stage = (ds.get("zero_optimization") or {}).get("stage")
    env_stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if env_stage is not None:
        stage = int(env_stage)
    if stage is not None and int(stage) >= 3:
        raise ConfigError(
            "DeepSpeed ZeRO-3 is not supported: it partitions the LoRA parameters, and the RegLoRA "
            "penalty and the key elements need every adapted linear whole on each rank. Use ZeRO-2 "
            "(configs/accelerate/zero2.yaml, configs/deepspeed/zero2.json) or DDP "
            "(configs/accelerate/ddp.yaml)."
        )
    import importlib.util

    if cfg.train.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"train.deepspeed={cfg.train.deepspeed} needs DeepSpeed: pip install 'sefe[deepspeed]' "
            "(or set train.deepspeed=null for DDP)"
        )


def free_memory() -> None:
    """Drop unreachable trainers/optimizers now (a 7B stage's optimizer states would sit on the GPU)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
