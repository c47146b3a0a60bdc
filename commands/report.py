"""`sefe report`: report.md, report.json and plots of one or more runs."""

from __future__ import annotations

from pathlib import Path

import typer

from sefe.commands.common import type_check
from sefe.paths import OutputDir


def report_cmd(
    runs: list[Path] = typer.Argument(..., help="Run folders (or accuracy.json files), shown side by side."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        callback=type_check(OutputDir),
        help="Output folder (default: the run folder, or ./sefe-report for several runs).",
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
) -> None:
    """Write report.md, report.json and PNG plots (heatmap, accuracy over stages, runs side by side)."""
    from sefe.evaluation.report import build_report

    target = out or (runs[0] if len(runs) == 1 and runs[0].is_dir() else Path("sefe-report"))
    report = build_report(runs, target, plots=not no_plots)
    for r in report.runs:
        m = r.metrics
        typer.echo(
            f"{r.label} ({r.mode}): MFT {m.MFT if m.MFT is None else round(m.MFT, 2)}, "
            f"MFN {m.MFN if m.MFN is None else round(m.MFN, 2)}, stages {m.stages}/{len(r.matrix.tasks)}"
        )
    typer.echo(f"report: {target / 'report.md'}")
