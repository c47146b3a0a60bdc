"""The options of `sefe asd build` / `sefe asd plan`, in a light module the CLI reads its defaults from.

Kept apart from `build.py` so `sefe --help` does not import the whole build pipeline.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sefe.asd_gen.needs import DistractorMode, GenerationOptions
from sefe.data import coin_mini_root
from sefe.paths import OutputDir


class BuildOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_root: Path = Field(default_factory=coin_mini_root)
    out: OutputDir = Path("out/coin-asd")
    # None: the root's tasks.json tasks (else CoIN's) that have a train.json
    tasks: list[str] | None = Field(None, min_length=1)
    xs: list[float] = Field(default_factory=lambda: [20.0])
    seed: int = 0
    distractors: DistractorMode = "model"
    allow_partial: bool = False  # write a task's files even while some of its needs are open (say so)
    generation: GenerationOptions = Field(default_factory=GenerationOptions)

    @field_validator("xs")
    @classmethod
    def _percentages(cls, xs: list[float]) -> list[float]:
        for x in xs:
            if not 0 <= x <= 100:
                raise ValueError(f"X must be a percentage in [0, 100], got {x:g}")
        return sorted(set(xs))
