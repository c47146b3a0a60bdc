"""`sefe demo` / `make demo`: the whole SEFE pipeline on bundled data with embedded defaults.

Default (`--on micro`, `sefe.micro.demo`): Micro-CoIN, LoRA on the original data against SEFE (RegLoRA on ASD
data). `--on coin-mini` (`run_demo` below): the CoIN-format sample data (three tasks), ASD written by the
embedded SmolLM2, the embedded tiny LLaVA trained with LoRA and RegLoRA: the whole CoIN pipeline, though its
model learns little. Every step resumes: rerunning the same command skips finished work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sefe.asd_gen.needs import BackendName, GenerationOptions
from sefe.coin.tasks import COIN_TASK_NAMES
from sefe.commands.common import arg_default, default, field_check, model_option, type_check
from sefe.micro.options import DEMO_DATA, DEMO_OUT, DemoData, MicroOptions
from sefe.paths import OutputDir
from sefe.sefe_train.config import TrainOptions

if TYPE_CHECKING:
    from rich.console import Console

_GEN = GenerationOptions


def run_demo(
    out: Path,
    x: float = 20.0,
    train_tasks: tuple[str, ...] = COIN_TASK_NAMES[:3],
    backend: str = "local",
    max_steps: int | None = None,
    console: Console | None = None,
) -> Path:
    """Run ASD, LoRA and RegLoRA training, and the report under `out`; return the report folder."""
    from rich.console import Console
    from rich.rule import Rule

    from sefe.asd_gen.build import BuildOptions, build
    from sefe.asd_gen.summary import build_table
    from sefe.coin.layout import asd_train_path
    from sefe.data import coin_mini_root
    from sefe.evaluation.report import build_report
    from sefe.sefe_train.config import load_config
    from sefe.sefe_train.runner import ContinualRunner

    console = console or Console()
    out = out.resolve()
    data_root = coin_mini_root()
    asd_out = out / "coin-asd"
    tag = f"{x:g}"

    console.print(Rule(f"1/3  ASD: sefe asd build --x {tag} ({backend} backend)"))
    result = build(
        BuildOptions(
            data_root=data_root,
            out=asd_out,
            tasks=list(train_tasks),
            xs=[x],
            generation=GenerationOptions(backend=backend),
        ),
        console=console,
    )
    console.print(build_table(result))

    runs: list[Path] = []
    for i, method in enumerate(("lora", "reglora"), start=2):
        run_dir = out / "runs" / method
        title = f"{i}/3  sefe train --method {method} on {', '.join(train_tasks)} (train_x{tag}.json)"
        console.print(Rule(title))
        overrides = [
            f"method={method}",
            f"output_dir={run_dir}",
            f"data_root={data_root}",
            f"train_file={asd_train_path(asd_out, '{task}', x)}",
            f"tasks=[{','.join(train_tasks)}]",
        ]
        if max_steps is not None:
            overrides.append(f"train.max_steps={max_steps}")
        cfg = load_config(_demo_config(), overrides)
        ContinualRunner(cfg).run()
        runs.append(run_dir)

    console.print(Rule("3/3  sefe report"))
    report_dir = out / "report"
    build_report(runs, report_dir)
    console.print(f"report: {report_dir / 'report.md'}", highlight=False)
    return report_dir


def _demo_config() -> Path:
    """The shipped tiny-model config (package data), so the demo works from an installed wheel too."""
    return Path(__file__).resolve().parents[1] / "configs" / "coin-mini.yaml"


def demo_cmd(
    out: Path = typer.Option(
        DEMO_OUT, callback=type_check(OutputDir), help="Where ASD data, both runs and the report go."
    ),
    x: float = typer.Option(
        arg_default(run_demo, "x"),
        "--x",
        callback=field_check(MicroOptions, "x"),
        help="Percent of each task converted by ASD.",
    ),
    backend: BackendName = typer.Option(
        default(_GEN, "backend"), help="ASD generation backend (local = embedded SmolLM2)."
    ),
    max_steps: int | None = model_option(
        TrainOptions,
        "max_steps",
        default_value=None,
        help="Cap the steps of every training stage (coin-mini).",
    ),
    on: DemoData = typer.Option(
        DEMO_DATA, help="micro: LoRA vs SEFE on Micro-CoIN; coin-mini: the CoIN sample data, SmolLM2 ASD."
    ),
) -> None:
    """The main job on bundled data: ASD, then LoRA vs SEFE over the task sequence, then a report."""
    from sefe.micro.demo import run_micro_demo

    if on == "micro":
        report = run_micro_demo(out, x=x)
    else:
        report = run_demo(out, x=x, backend=backend, max_steps=max_steps)
    typer.echo(f"done: open {report / 'report.md'}")
