"""`sefe train`: continual training, task after task, with one of the installed methods."""

from __future__ import annotations

from pathlib import Path

import typer

from sefe.commands.common import model_option, names_option, type_check
from sefe.paths import OutputDir
from sefe.sefe_train.config import TrainOptions
from sefe.sefe_train.reglora.config import Accumulate, RegDelta


def _methods_help() -> str:
    """The installed continual methods, one per line, for `sefe train --help` (light imports only)."""
    from sefe.sefe_train.methods import list_methods

    return "\n\n".join(f"{m.name}: {m.summary}" for m in list_methods())


def _method_names() -> str:
    from sefe.sefe_train.methods import method_names

    return " | ".join(method_names())


def help_text() -> str:
    """The command's help: what it does, then every installed method with its summary."""
    return (
        "Continual training task after task with one of the installed methods. Rerun the same command "
        "to resume.\n\nInstalled methods (docs/METHODS.md; options: -o KEY=VALUE or --set "
        "method_options.NAME.KEY=VALUE):\n\n" + _methods_help()
    )


def train_cmd(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Run config YAML (default: tiny model, coin-mini, 3 tasks)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override any config key, repeatable: --set train.lr=1e-4 --set reglora.lam=100."
    ),
    method: str | None = typer.Option(None, "--method", "-m", help=f"Continual method: {_method_names()}."),
    option: list[str] = typer.Option(
        [],
        "--option",
        "-o",
        help="An option of the chosen method, repeatable: -o share=0.1 (= --set method_options.M.share=0.1).",
    ),
    out: Path | None = typer.Option(
        None, "--out", callback=type_check(OutputDir), help="Run folder (output_dir)."
    ),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated task names, in training order."),
    data_root: Path | None = typer.Option(None, "--data-root", help="CoIN data root."),
    max_steps: int | None = model_option(
        TrainOptions, "max_steps", "--max-steps", default_value=None, help="Cap the steps of every stage."
    ),
    reg_delta: RegDelta | None = typer.Option(None, "--reg-delta", help="RegLoRA ΔW."),
    accumulate: Accumulate | None = typer.Option(None, "--accumulate", help="Key accumulation over tasks."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip evaluating tasks 1..k after each stage."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
) -> None:
    from sefe.sefe_train.config import (
        cli_overrides,
        dump_config,
        load_config,
        method_option_overrides,
        select_tasks,
    )

    overrides = cli_overrides(
        method=method, out=out, data_root=data_root, max_steps=max_steps, no_eval=no_eval
    )
    # RegLoRA's own flags are method options like -o: the chosen method's options model refuses them if it
    # has no such option (`--method lora --reg-delta scaled`)
    flags = (("reg_delta", reg_delta), ("accumulate", accumulate))
    option = [*(f"{key}={value}" for key, value in flags if value is not None), *option]
    cfg = load_config(config, overrides + list(set_))
    if option:
        cfg = load_config(config, overrides + list(set_) + method_option_overrides(cfg.method, option))
    names = names_option(tasks, "--tasks")
    if names is not None:
        cfg = select_tasks(cfg, names)
    from sefe.sefe_train.methods import resolve

    continual_method = resolve(cfg)  # a bad method name or option: one line, exit 2
    if print_config:
        typer.echo(dump_config(cfg))
        return
    from sefe.sefe_train.runner import ContinualRunner

    state = ContinualRunner(cfg, method=continual_method).run()
    typer.echo(f"run folder: {cfg.output_dir} ({len(state.done)}/{len(cfg.tasks)} stages done)")
