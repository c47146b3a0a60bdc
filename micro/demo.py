"""`sefe demo` (the default, `--on micro`): plain LoRA against SEFE on Micro-CoIN, one seed, side by side.

The generated benchmark, the warm start (cached), ASD with the scene backend, both continual runs evaluated
after every task, and `report.md` with the accuracy, format-error and knowledge matrices of both: a run where
forgetting can be seen, in minutes on a laptop. Rerunning the same command skips finished work.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sefe.micro.options import MicroOptions
from sefe.micro.run import run_micro


def run_micro_demo(out: Path, x: float = 20.0, console: Console | None = None) -> Path:
    """LoRA/original vs SEFE (reglora/asd), one seed, on Micro-CoIN; returns the folder of `report.md`."""
    # 100 steps a task (400 records, 2 epochs; the benchmark's default is 600): the demo must fit in 10
    # minutes with the install and the warm start on 2 cores (v1 measured 623 s with 200 steps); the style
    # takeover and its cure show either way
    pairs = ["lora/original", "reglora/asd"]
    opts = MicroOptions(
        out=out.resolve() / "micro",
        pairs=pairs,
        seeds=1,
        x=x,
        epochs=2.0,
        n_train=400,
        n_test=100,  # evaluation is most of a run's time: 21 cells of 200 items made the demo 11+ minutes
        jobs=2,
        lam_sweep=[],
    )
    return run_micro(opts, console=console).parent
