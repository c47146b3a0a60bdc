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
    t = Table(title="ASD build", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in ("X", "task", "n", "sel", *STYLES, "kept", "output"):
        t.add_column(col, justify="left" if col in ("task", "output") else "right", no_wrap=col != "output")
    for x, tasks in result.tasks.items():
        for name, o in tasks.items():
            kept = sum(len(v) for v in o.kept_original.values())
            t.add_row(
                x,
                name,
                str(o.records),
                str(o.selected),
                *(str(o.converted.get(s, "-")) for s in STYLES),
                str(kept),
                o.output,
            )
    return t
