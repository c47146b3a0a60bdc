"""`sefe micro build | run`: the Micro-CoIN benchmark and its method x data x seed comparison."""

from __future__ import annotations

from pathlib import Path

import typer

from sefe.commands.common import default, model_option, split_list
from sefe.micro.options import MicroOptions
from sefe.micro.vision_pretrain import VisionPretrainOptions
from sefe.micro.warmstart import WarmStartOptions
from sefe.models.small import small_family_names

app = typer.Typer(help="Micro-CoIN: a generated benchmark that shows superficial and essential forgetting.")


@app.command("build")
def micro_build_cmd(
    out: Path = model_option(MicroOptions, "out", "--out", "-o", help="Data root to write (CoIN layout)."),
    seed: int = model_option(MicroOptions, "benchmark_seed", help="Benchmark seed (same seed, same bytes)."),
    n_train: int = model_option(MicroOptions, "n_train", "--train", help="Train records per task."),
    n_test: int = model_option(MicroOptions, "n_test", "--test", help="Test records per task."),
    n_warm: int = model_option(MicroOptions, "n_warm", "--warm", help="Pictures in the warm-start corpus."),
) -> None:
    """Generate the six Micro-CoIN tasks, their ground truth, distractor pools and the warm-start corpus."""
    from sefe.micro.generate import build_micro

    root = build_micro(out, seed=seed, n_train=n_train, n_test=n_test, n_warm=n_warm)
    typer.echo(f"Micro-CoIN data root: {root}")


@app.command("run")
def micro_run_cmd(
    out: Path = model_option(
        MicroOptions, "out", "--out", "-o", help="Folder for data, runs, report.md / report.json / plots."
    ),
    family: str = model_option(
        MicroOptions,
        "family",
        help=f"Model family of the warm-start model: {', '.join(small_family_names())}.",
    ),
    methods: str = typer.Option(
        ",".join(default(MicroOptions, "methods")),
        help="Comma-separated methods (any `sefe train --method`).",
    ),
    data: str = typer.Option(
        ",".join(default(MicroOptions, "data")),
        help="Comma-separated: original | asd (SEFE = reglora on asd).",
    ),
    seeds: int = model_option(
        MicroOptions,
        "seeds",
        help="Seeds per combination (0..N-1); each its own task data, ASD selection and training seed.",
    ),
    controls: str = typer.Option(
        ",".join(default(MicroOptions, "controls")),
        help="Comma-separated METHOD/DATA runs beside methods x data ('' for none): the positive control.",
    ),
    alone: bool = typer.Option(
        default(MicroOptions, "alone"), "--alone/--no-alone", help="Train each task alone (the ceiling)."
    ),
    lam_sweep: str = typer.Option(
        ",".join(f"{v:g}" for v in default(MicroOptions, "lam_sweep")),
        help="Comma-separated RegLoRA λ values also run on seed 0 (reglora/asd); '' for none.",
    ),
    tasks: str | None = typer.Option(None, help="Comma-separated subset of the tasks, in order."),
    epochs: float | None = model_option(
        MicroOptions,
        "epochs",
        default_value=None,
        help=f"Epochs per task (default {default(MicroOptions, 'epochs'):g}).",
    ),
    n_train: int | None = model_option(
        MicroOptions,
        "n_train",
        "--train",
        default_value=None,
        help=f"Train records per task (default {default(MicroOptions, 'n_train')}).",
    ),
    n_test: int | None = model_option(
        MicroOptions,
        "n_test",
        "--test",
        default_value=None,
        help=f"Test records per task (default {default(MicroOptions, 'n_test')}).",
    ),
    warm_steps: int | None = model_option(
        WarmStartOptions,
        "steps",
        default_value=None,
        help=f"Warm-start language-model steps (default {default(WarmStartOptions, 'steps')}; "
        "the vision tower's are separate).",
    ),
    vision_steps: int | None = model_option(
        VisionPretrainOptions,
        "steps",
        default_value=None,
        help=f"Warm-start vision-tower steps (default {default(VisionPretrainOptions, 'steps')}).",
    ),
    threads: int | None = model_option(MicroOptions, "threads", help="torch threads (default: torch's)."),
    jobs: int = model_option(
        MicroOptions, "jobs", help="Runs trained at once, one process each (logs in DIR/runs/)."
    ),
) -> None:
    """Train the task sequence per method x data x seed, evaluate after every task, write the report.

    Rerun the same command to resume after a kill."""
    from sefe.micro.run import run_micro

    raw: dict[str, object] = {
        "out": out,
        "family": family,
        "methods": split_list([methods]),
        "data": split_list([data]),
        "seeds": seeds,
        "controls": split_list([controls]),
        "alone": alone,
        "lam_sweep": split_list([lam_sweep]),
        "threads": threads,
        "jobs": jobs,
    }
    if tasks is not None:
        raw["tasks"] = split_list([tasks])
    for key, value in (("epochs", epochs), ("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            raw[key] = value
    warm: dict[str, object] = {}
    if warm_steps is not None:
        warm["steps"] = warm_steps
        warm["simple_steps"] = min(warm_steps, WarmStartOptions().simple_steps)
    if vision_steps is not None:
        warm["vision"] = {"steps": vision_steps}
    if warm:
        raw["warm"] = WarmStartOptions.model_validate(warm)
    report = run_micro(MicroOptions.model_validate(raw))
    typer.echo(f"report: {report}")
