"""RegLoRA options (pydantic, so run configs validate them and the CLI can override them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Which ΔW is penalised (`--reg-delta`).
RegDelta = Literal["ba", "scaled"]
#: How key positions of several tasks combine (`--accumulate`).
Accumulate = Literal["union", "concat"]
#: How the penalty is computed (`sefe bench reglora --impl`).
PenaltyImpl = Literal["auto", "dense", "sampled"]
#: Parameter dtypes `sefe bench reglora` measures.
BenchDType = Literal["float32", "bfloat16"]


class BenchOptions(BaseModel):
    """Defaults and bounds of `sefe bench reglora` (here, torch-free: `sefe --help` reads them without
    importing the benchmark module); the defaults measure LLaMA-7B's attention and MLP shapes at rank 128."""

    model_config = ConfigDict(extra="forbid")

    reps: int = Field(5, ge=1)
    densities: str = "2,6,14"
    device: str = "cpu"
    dtype: BenchDType = "float32"
    shapes: str = "4096x4096,11008x4096,4096x11008"
    rank: int = Field(128, ge=1)
    impl: PenaltyImpl = "auto"
    storage: bool = True
    threads: int | None = Field(None, ge=1)


class RegLoRAConfig(BaseModel):
    """Options of the RegLoRA penalty and of key-element selection.

    Defaults follow the SEFE release: λ = 2500, top 2 percent of |B·A| per adapted linear, unscaled B·A,
    and key positions of several tasks concatenated (a position two tasks chose weighs twice, as the
    release's concatenated index lists do); `union` is the compact variant (one bit per weight).
    """

    model_config = ConfigDict(extra="forbid")

    lam: float = Field(2500.0, ge=0.0, description="λ: weight of the penalty added to the CE loss.")
    top_percent: float = Field(
        2.0, gt=0.0, le=100.0, description="M: percent of each matrix's entries kept as key elements."
    )
    reg_delta: RegDelta = Field(
        "ba", description="'ba': penalise B·A as the reference does; 'scaled': the (alpha/r)·B·A update."
    )
    accumulate: Accumulate = Field(
        "concat",
        description="'concat' (default, the SEFE release: its per-task index lists are concatenated): a "
        "position chosen by two tasks weighs twice. 'union': the compact variant, one bitmask OR over "
        "tasks, every position weighs once (penalty ~0.5 % off the release's, single gradient entries "
        "up to 39 % where positions repeat; docs/METHODS.md).",
    )
    impl: PenaltyImpl = Field(
        "auto", description="Penalty computation: dense B·A then gather, or only the sampled entries."
    )
