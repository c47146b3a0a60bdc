"""Rich tables for `sefe asd plan` and `sefe asd build` (kept out of cli.py so the CLI stays thin)."""

from __future__ import annotations

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from sefe.asd_gen.build import BuildResult, Plan
from sefe.coin.instructions import STYLES


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def plan_table(plan: Plan) -> Group:
    t = Table(
        title="ASD plan (no model is called)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for col in ("task", "X", "n", "sel", *STYLES, "req", "tokens", "skip"):
        t.add_column(
            col,
            justify="left" if col == "task" else "right",
            no_wrap=True,
            min_width=9 if col == "task" else None,
        )
    for row in plan.tasks:
        cells = []
        for s in STYLES:
            prod = row.productions.get(s)
            cells.append("-" if prod is None else f"{row.styles.get(s, 0)}{prod[0]}")
        t.add_row(
            row.task,
            f"{row.x:g}",
            str(row.records),
            str(row.selected),
            *cells,
            str(row.model_requests),
            f"{_k(row.tokens_in)}/{_k(row.tokens_out)}",
            str(row.unconvertible),
        )
    e = plan.estimate
    how = "engine estimate" if plan.estimate_source == "engine" else "rough estimate: engine not available"
    note = Text(
        f"All tasks at the largest X: {e.requests} model requests ({e.cached} cached), "
        f"~{e.tokens_in:,} tokens in, "
        f"~{e.tokens_out:,} tokens out ({how}). One generation run serves every X.\n"
        "n records, sel selected, req model requests, tokens in/out, skip unconvertible; "
        "style counts: r rule, d data candidates, m model, - original style."
    )
    return Group(t, note)


def build_table(result: BuildResult) -> Table:
    """Per X and task: converted records per style, kept originals, effective X beside the requested X."""
    t = Table(title="ASD build", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in ("X", "task", "n", "sel", *STYLES, "kept", "eff X", "output"):
        t.add_column(col, justify="left" if col in ("task", "output") else "right", no_wrap=col != "output")
    for x, tasks in result.tasks.items():
        for name, o in tasks.items():
            kept = sum(len(v) for v in o.kept_original.values())
            eff = f"{o.effective_x:.1f}"
            shown = o.output or "[yellow]not written: needs open[/yellow]"
            if o.status == "partial":
                eff, shown = f"[yellow]{eff}[/yellow]", f"{o.output} [yellow](partial)[/yellow]"
            t.add_row(
                x,
                name,
                str(o.records),
                str(o.selected),
                *(str(o.converted.get(s, "-")) for s in STYLES),
                str(kept),
                eff,
                shown,
            )
    return t


def open_needs_text(result: BuildResult) -> str:
    """Per task: how many selected records wait for an answer, and why; what to do next."""
    lines = []
    if result.stopped:
        lines.append(f"generation {result.stopped}")
    for task, reasons in result.open_by_task.items():
        why = "; ".join(f"{n} {reason}" for reason, n in reasons.items())
        lines.append(f"{task}: {sum(reasons.values())} needs open ({why})")
    if result.status == "partial":
        for x, tasks in result.tasks.items():
            for name, o in tasks.items():
                if o.status == "partial":
                    shares = ", ".join(
                        f"{s} {o.effective_by_style.get(s, 0.0):g}/{o.requested_by_style.get(s, 0.0):g}"
                        for s in o.requested_by_style
                    )
                    lines.append(
                        f"{name} x{x}: partial, effective X {o.effective_x:g} of {x} "
                        f"(percent of the task per style, effective/requested: {shares})"
                    )
        lines.append(
            "--allow-partial: these tasks were written with the open records in their original style "
            "(status 'partial' and the effective X are in the manifest)."
        )
    else:
        lines.append(
            "These tasks were not written (a file named x{X} must hold X percent). "
            "Rerunning the same command resumes: answered requests are cached and not sent again."
        )
    return "\n".join(lines)
