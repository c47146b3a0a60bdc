"""step_bar: a live bar on a terminal, plain lines at every tenth when the output goes to a log."""

from __future__ import annotations

import io

from rich.console import Console

from sefe.progress import LogLines, step_bar


def test_a_log_gets_one_line_per_tenth() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=120)
    with step_bar(console) as progress:
        assert isinstance(progress, LogLines)
        bar = progress.add_task("warm start", total=50)
        for step in range(50):
            if step == 20:
                progress.update(bar, description="warm start (loss 1.234)")
            progress.advance(bar)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("warm start: 5/50 (") and lines[-1].startswith(
        "warm start (loss 1.234): 50/50 ("
    )


def test_a_terminal_keeps_the_live_bar_and_disable_prints_nothing() -> None:
    term = Console(file=io.StringIO(), force_terminal=True)
    assert not isinstance(step_bar(term), LogLines)
    buf = io.StringIO()
    with step_bar(Console(file=buf, force_terminal=False), disable=True) as progress:
        progress.advance(progress.add_task("quiet", total=3), 3)
    assert buf.getvalue() == ""
