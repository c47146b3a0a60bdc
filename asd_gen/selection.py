"""Nested, seeded X-percent selection with equal style shares.

Each task's records are put in one seeded order (SHA-256 of seed, task, index and id: no dependence on
hash seeds or platform). Selecting X percent takes the first round(X% of n) records of that order, and the
record at position i gets style `order[i mod 4]` of a seeded order of the four target styles. Hence:
- the X=20 selection is a prefix of the X=40 selection and every record keeps its style across X
  (one generation run serves every X);
- at every X the four shares differ by at most one.
Rounding is half-up (`round(2.5) = 3`), computed exactly with fractions.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from pydantic import BaseModel

from sefe.asd_gen.styles.rng import digest
from sefe.coin.instructions import Style

SELECTION_RULE = (
    "records ordered by sha256(seed, task, index, id); the first round_half_up(X/100*n) are selected; "
    "position i gets style i mod 4 of a seed-shuffled order of the task's four target styles"
)


def selected_count(n: int, x: float) -> int:
    """round_half_up(x/100 * n), exact."""
    if not 0 <= x <= 100:
        raise ValueError(f"X must be a percentage in [0, 100], got {x}")
    v = Fraction(x).limit_denominator(10**6) * n / 100
    return int(v + Fraction(1, 2))


def selection_order(task: str, ids: Sequence[str | int], seed: int) -> list[int]:
    """Record indices in this task's seeded selection order."""
    return sorted(range(len(ids)), key=lambda i: digest(seed, task, "select", i, ids[i]))


def style_cycle(task: str, styles: Sequence[Style], seed: int) -> list[Style]:
    """The task's target styles in seeded order (decides which style gets the extra record)."""
    return sorted(styles, key=lambda s: digest(seed, task, "styles", s))


class Selection(BaseModel):
    """Which records of one task are converted at one X, and to which style."""

    task: str
    x: float
    n: int
    styles: dict[int, Style]  # record index -> target style (only selected records)
    ordered: list[int]  # the selected record indices in selection order

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.styles.values():
            out[s] = out.get(s, 0) + 1
        return dict(sorted(out.items()))


def select(task: str, ids: Sequence[str | int], styles: Sequence[Style], x: float, seed: int) -> Selection:
    """Select X percent of a task's records and assign each selected record one of `styles`."""
    if len(styles) == 0:
        raise ValueError("no target styles")
    order = selection_order(task, ids, seed)
    cycle = style_cycle(task, styles, seed)
    k = selected_count(len(ids), x)
    chosen = order[:k]
    return Selection(
        task=task,
        x=x,
        n=len(ids),
        styles={idx: cycle[pos % len(cycle)] for pos, idx in enumerate(chosen)},
        ordered=chosen,
    )


def running_offsets(selection: Selection, sizes: Sequence[int], style: Style) -> dict[int, int]:
    """For each record of `style`: how many items (turns) of that style come before it in selection order.

    Yes/no answers alternate along this running item count, so the Yes/No balance is within one at every X
    and a record's answers do not change when X grows.
    """
    total = 0
    out: dict[int, int] = {}
    for idx in selection.ordered:
        if selection.styles[idx] == style:
            out[idx] = total
            total += sizes[idx]
    return out
