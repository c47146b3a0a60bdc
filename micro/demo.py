"""`sefe demo` (the default, `--on micro`): plain LoRA against SEFE on Micro-CoIN, one seed, side by side.

The generated benchmark, the warm start (cached), ASD with the scene backend, both continual runs evaluated
after every task, each task trained alone (the ceiling), and `report.md` with the accuracy, format-error,
out-of-pool and probe matrices of both: a run where forgetting can be seen, in minutes on a laptop.
Rerunning the same command skips finished work.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sefe.micro.options import MicroOptions
from sefe.micro.run import run_micro

#: The demo's three tasks, one answer style each (short phrase -> letter -> Yes/No): each is learned alone in
#: 200 steps from the warm start (spec: 100 %, 100 %, 85 %), so every column of the demo can show forgetting;
#: Shape, Word and Locate need 600-800 steps and stay in `sefe micro run`.
DEMO_TASKS = ["Colour", "Count", "Side"]


def run_micro_demo(out: Path, x: float = 20.0, console: Console | None = None) -> Path:
    """LoRA/original vs SEFE (reglora/asd), one seed, on three Micro-CoIN tasks, with each task trained alone
    beside them (the ceiling table); returns the folder of `report.md`."""
    # 200 steps a task (400 records, 4 epochs) and the full stratified 200-item tests: the demo must fit in
    # 10 minutes with the install and the warm start on 2 cores; six tasks at the benchmark's 600 steps do not
    opts = MicroOptions(
        out=out.resolve() / "micro",
        pairs=["lora/original", "reglora/asd"],
        tasks=DEMO_TASKS,
        seeds=1,
        x=x,
        epochs=4.0,
        n_train=400,
        jobs=2,
        lam_sweep=[],
    )
    return run_micro(opts, console=console).parent
