"""The `sefe` command line: builds the app, mounts one module of `sefe.commands` per command group, and
installs the one error wrapper.

Heavy imports (torch, transformers) happen inside commands so `sefe --help` stays fast. Every command reports
user errors (`sefe.errors.SefeError`, pydantic validation errors) as one line with their exit code, and
Ctrl-C as the resume hint with exit code 130 (`sefe.errors.report_errors`): commands catch nothing themselves.
"""

from __future__ import annotations

import typer

from sefe.commands import asd, bench, demo, keys, micro, report, train
from sefe.commands import eval as eval_
from sefe.commands.common import OneLineErrors
from sefe.errors import report_errors

app = typer.Typer(
    name="sefe",
    help="SEFE: Answer Style Diversification (ASD) and RegLoRA for multimodal continual instruction tuning.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=OneLineErrors,
)
app.command("train", help=train.help_text())(train.train_cmd)
app.command("report")(report.report_cmd)
app.command("demo")(demo.demo_cmd)
app.add_typer(asd.app, name="asd")
app.add_typer(eval_.app, name="eval")
app.add_typer(bench.app, name="bench")
app.add_typer(keys.app, name="keys")
app.add_typer(micro.app, name="micro")


def _report_errors_everywhere(root: typer.Typer) -> None:
    """Wrap every registered command (sub-apps too): a user error becomes one line and its exit code."""
    for info in root.registered_commands:
        if info.callback is not None and not getattr(info.callback, "__wrapped__", None):
            info.callback = report_errors(info.callback)
    for group in root.registered_groups:
        if group.typer_instance is not None:
            _report_errors_everywhere(group.typer_instance)


_report_errors_everywhere(app)

if __name__ == "__main__":
    app()
