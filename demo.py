"""`sefe demo` / `make demo`: the whole SEFE pipeline on bundled data with embedded defaults.

Default (`--on micro`): Micro-CoIN, one seed, 2 epochs a task, plain LoRA on the original data against SEFE
(RegLoRA on ASD data, the two runs side by side): the generated benchmark, the warm start (cached),
`sefe asd build --x 20` with the scene backend, both continual runs evaluated after every task, and
`report.md` with the accuracy, format-error and knowledge matrices of both. A run where forgetting can be
seen, in minutes on a laptop.

`--on coin-mini`: the CoIN-format sample data (three tasks), ASD written by the embedded SmolLM2, the
embedded tiny LLaVA trained with LoRA and RegLoRA: the whole CoIN pipeline, though its model learns little.
Every step resumes: rerunning the same command skips finished work.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from sefe.coin.tasks import COIN_TASK_NAMES


def run_micro_demo(out: Path, x: float = 20.0, console: Console | None = None) -> Path:
    """LoRA/original vs SEFE (reglora/asd), one seed, on Micro-CoIN; returns the folder of `report.md`."""
    from sefe.micro.run import MicroOptions, run_micro

    # 2 epochs a task (the benchmark's default is 4): the demo must fit in 10 minutes with the install and
    # the warm start on 2 cores (measured 623 s with 4); the style takeover and its cure show either way
    pairs = ["lora/original", "reglora/asd"]
    opts = MicroOptions(out=out.resolve() / "micro", pairs=pairs, seeds=1, x=x, epochs=2.0, jobs=2)
    return run_micro(opts, console=console).parent


def run_demo(
    out: Path,
    x: float = 20.0,
    train_tasks: tuple[str, ...] = COIN_TASK_NAMES[:3],
    backend: str = "local",
    max_steps: int | None = None,
    console: Console | None = None,
) -> Path:
    """Run ASD, LoRA and RegLoRA training, and the report under `out`; return the report folder."""
    from sefe.asd_gen.build import BuildOptions, build
    from sefe.asd_gen.needs import GenerationOptions
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
    return Path(__file__).resolve().parent / "configs" / "coin-mini.yaml"
