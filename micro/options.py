"""What a Micro-CoIN comparison is asked to do (`MicroOptions`, a `RunSpec` per run) and where it lives.

Why apart from `run.py`: the report reads the same folder names and data roots that the runs write, and the
runner calls the report; both import these from here, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from sefe.errors import InputError
from sefe.micro.generate import HARD_TASKS, TASK_ORDER
from sefe.micro.warmstart import WarmStartOptions
from sefe.models.family import FAMILY
from sefe.models.small import small_builder
from sefe.paths import OutputDir

#: What `sefe demo` runs on (`--on`): Micro-CoIN, or the CoIN sample data with the tiny LLaVA.
DemoData = Literal["micro", "coin-mini"]
DEMO_DATA: DemoData = "micro"
#: Where `sefe demo` writes its ASD data, runs and report (`--out`).
DEMO_OUT = Path("out/demo")


def _small_family(name: str) -> str:
    small_builder(name)  # InputError, a ValueError: names the families that have one
    return name


#: A model family with a small warm-start model (`SmallBuilder`); checked while parsing `--family` too.
SmallFamily = Annotated[str, AfterValidator(_small_family)]

DataKind = Literal["original", "asd"]
_ALL_DATA: tuple[DataKind, ...] = ("original", "asd")


class MicroOptions(BaseModel):
    """Everything a Micro-CoIN comparison depends on (stored in DIR/micro.json)."""

    model_config = ConfigDict(extra="forbid")

    out: OutputDir
    family: SmallFamily = FAMILY.name  # the warm-start model's family
    methods: list[str] = Field(default_factory=lambda: ["lora", "reglora"], min_length=1)
    data: list[DataKind] = Field(default_factory=lambda: list(_ALL_DATA), min_length=1)
    seeds: int = Field(5, ge=1)  # each seed: its own task data, ASD selection and training seed
    vary_data: bool = True  # False: every seed on one data root (v1: only the training seed varied)
    tasks: list[str] = Field(default_factory=lambda: list(TASK_ORDER), min_length=1)
    benchmark_seed: int = Field(0, ge=0)  # numpy seeds are 0 or more
    n_train: int = Field(800, gt=0)
    n_test: int = Field(200, gt=0)  # stratified: every answer equally frequent (spec: 50 gave ±6.5 points)
    n_warm: int = Field(1500, gt=0)
    x: float = Field(20.0, ge=0, le=100)
    epochs: float = Field(6.0, gt=0)  # 600 steps of 8 a task: Shape and Word need ~800 alone, Colour 200
    lr: float = Field(2e-3, gt=0)
    projector_lr: float | None = Field(None, ge=0)  # None: lr / 10, the paper's ratio (v1 trained it at lr)
    batch_size: int = Field(8, gt=0)
    lora_r: int = Field(8, gt=0)
    lam: float = Field(2500.0, ge=0)
    warm: WarmStartOptions = Field(default_factory=WarmStartOptions)
    threads: int | None = Field(None, ge=1)
    jobs: int = Field(1, ge=1)  # runs trained at once, each in its own process (spawned), log in runs/
    pairs: list[str] | None = None  # e.g. ["lora/original", "reglora/asd"]: only these, not methods x data
    # beside methods x data: the positive control (replay raises retention, or the benchmark cannot see it)
    controls: list[str] = Field(default_factory=lambda: ["replay/asd"])
    # the ceiling: each task trained alone (lora/original, seed 0) from the warm start
    alone: bool = True
    # on seed 0, reglora/asd at these λ too (the stability-plasticity curve; `lam` itself is the main run)
    lam_sweep: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [0.0, 25000.0]
    )

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        unknown = [t for t in tasks if t not in (*TASK_ORDER, *HARD_TASKS)]
        if unknown:
            known = ", ".join(TASK_ORDER) + "; opt-in hard track: " + ", ".join(HARD_TASKS)
            raise ValueError(f"unknown Micro-CoIN task(s) {unknown}: the tasks are {known}")
        return tasks

    @model_validator(mode="after")
    def _known_methods(self) -> MicroOptions:
        """Every method named (`methods` or `pairs`) must be one `sefe train --method` knows: fail early."""
        from sefe.sefe_train.methods import get_method

        for method, _ in self.combos():
            get_method(method)  # UnknownMethodError (a user error) names the installed ones
        return self

    def combos(self) -> list[tuple[str, DataKind]]:
        """(method, data) pairs to run, in order."""
        out: list[tuple[str, DataKind]] = []
        if self.pairs is None:
            out = [(m, d) for d in self.data for m in self.methods]
        for p in self.pairs if self.pairs is not None else self.controls:
            method, _, data = p.partition("/")
            if data not in _ALL_DATA:
                raise InputError(f"pair or control {p!r}: expected METHOD/original or METHOD/asd")
            if (method, data) not in out:
                out.append((method, data))
        return out

    def run_name(self, method: str, data: str, seed: int) -> str:
        return f"{method}_{data}_seed{seed}"

    def specs(self) -> list[RunSpec]:
        """Every run: the alone-trained ceilings (short; first, so a comparison cut short still has them),
        the comparison seed by seed (seeds x combos), then the λ sweep."""
        runs = []
        if self.alone:
            runs += [
                RunSpec(name=alone_name(t), method="lora", data="original", seed=0, tasks=[t], lam=self.lam)
                for t in self.tasks
            ]
        runs += [
            RunSpec(
                name=self.run_name(m, d, s), method=m, data=d, seed=s, tasks=list(self.tasks), lam=self.lam
            )
            for s in range(self.seeds)
            for m, d in self.combos()
        ]
        runs += [
            RunSpec(
                name=sweep_name(lam), method="reglora", data="asd", seed=0, tasks=list(self.tasks), lam=lam
            )
            for lam in self.lam_sweep
            if lam != self.lam
        ]
        return runs


class RunSpec(BaseModel):
    """One continual run of a comparison: its folder name under DIR/runs and what it trains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    method: str
    data: DataKind
    seed: int
    tasks: list[str]
    lam: float


def alone_name(task: str) -> str:
    return f"alone_{task}_seed0"


def sweep_name(lam: float) -> str:
    return f"reglora-lam{lam:g}_asd_seed0"


def data_seed(opts: MicroOptions, seed: int) -> int:
    """The task data's seed of run seed `seed` (the benchmark seed alone when data does not vary)."""
    return opts.benchmark_seed + seed if opts.vary_data else opts.benchmark_seed


def data_root(opts: MicroOptions, seed: int = 0) -> Path:
    """`DIR/data/seed<s>` (each seed its own pictures and questions), or `DIR/data` without `vary_data`."""
    return Path(opts.out) / "data" / f"seed{seed}" if opts.vary_data else Path(opts.out) / "data"


def asd_root(opts: MicroOptions, seed: int = 0) -> Path:
    return Path(opts.out) / "asd" / f"seed{seed}" if opts.vary_data else Path(opts.out) / "asd"
