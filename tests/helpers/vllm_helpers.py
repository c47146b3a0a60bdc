"""Constants and helpers shared by the vLLM tier tests (imported by name: conftest names are ambiguous)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COIN_MINI = REPO / "data" / "coin-mini"
# Engine arguments for a shared 2-core CPU box: a small RAM share and no torch.compile warm-up.
ENGINE_ARGS: dict[str, object] = {"gpu_memory_utilization": 0.3, "max_model_len": 2048, "enforce_eager": True}


def sefe_exe() -> str:
    """The `sefe` console script of the interpreter running the tests (the .venv-vllm one)."""
    return str(Path(sys.executable).parent / "sefe")
