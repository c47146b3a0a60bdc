"""Rich progress for generation: done/total, requests/s, tokens in/out, failures, ETA."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from sefe.asd_gen.stats import RunStats


class _StatsColumn(ProgressColumn):
    """Reads the live RunStats; rendering happens on rich's refresh thread, not per result."""

    def __init__(self, stats: RunStats) -> None:
        super().__init__()
        self.stats = stats

    def render(self, task: Task) -> Text:
        s = self.stats
        eta = s.eta_s()
        eta_txt = "--:--" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
        return Text(
            f"{s.finished}/{s.total}  {s.rate():.1f} req/s  tok in {s.tokens_in:,} out {s.tokens_out:,}  "
            f"failed {s.failed}  open {s.open}  invalid {s.invalid}  cached {s.cached}  ETA {eta_txt}"
        )


class GenerationProgress:
    """Context manager; `advance()` is cheap (no rendering), so it is safe to call per result."""

    def __init__(self, stats: RunStats, enabled: bool = True, console: Console | None = None) -> None:
        self.stats = stats
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]ASD generation"),
            BarColumn(),
            _StatsColumn(stats),
            console=console,
            refresh_per_second=2,
            disable=not enabled,
        )
        self._task = self._progress.add_task("gen", total=stats.total)

    def __enter__(self) -> GenerationProgress:
        self._progress.__enter__()
        self.advance()
        return self

    def advance(self) -> None:
        self._progress.update(self._task, completed=self.stats.finished, total=self.stats.total)

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.advance()
        self._progress.__exit__(et, ev, tb)
