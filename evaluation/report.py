"""`sefe report`: one or more run folders -> report.md, report.json and PNG plots.

A run folder holds `accuracy.json` (an `AccuracyMatrix`) and usually `config.yaml` / `config.json`; a path to
an `accuracy.json` file works too. Several runs go side by side (lora vs reglora, CoIN vs CoIN-ASD data), and
every table names the scoring mode, so compat and fixed numbers are never mixed up silently.
"""

from __future__ import annotations

import io
import platform
import re
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field

from sefe.atomic import atomic_write_bytes
from sefe.errors import InputError
from sefe.evaluation.metrics import (
    BWT_VARIANTS,
    AccuracyMatrix,
    ContinualMetrics,
)
from sefe.evaluation.pool_cells import FromPoolCells, later_from_pool, read_pool_cells
from sefe.evaluation.result_files import ACCURACY_FILE, FORMAT_FILE, KNOWLEDGE_FILE
from sefe.redact import redact

CONFIG_FILES = ("config.yaml", "config.yml", "config.json")
VERSION_PACKAGES = ("sefe", "torch", "transformers", "peft", "accelerate", "pydantic", "matplotlib")
METRIC_NAMES = ("MFT", "MFN", "MAA", "BWT", "BWT_all")
DESCRIBE_KEYS = ("method", "train_file")  # config keys that tell side-by-side runs apart


class ReportError(InputError):
    """A run folder that cannot be reported on."""


class TaskScore(BaseModel):
    """The latest evaluation of one task in a run (the last stage that evaluated it)."""

    model_config = ConfigDict(extra="forbid")

    task: str
    after_stage: int  # 1-based stage whose model was evaluated
    accuracy: float
    correct: float | None = None
    total: int | None = None
    missing: int | None = None
    gt_source: str | None = None
    approximate: bool = False  # scored without the official ground truth (see ScoreResult.approximate)
    notes: list[str] = Field(default_factory=list)


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str
    path: str
    mode: str
    matrix: AccuracyMatrix
    metrics: ContinualMetrics
    scores: list[TaskScore]
    config_file: str | None = None
    config: dict[str, Any] | None = None
    plots: list[str] = Field(default_factory=list)
    # superficial / essential forgetting, when the run recorded them (format_errors.json, knowledge.json,
    # out_of_pool.json + from_pool.json; runs written before these files existed have None)
    format_errors: AccuracyMatrix | None = None
    knowledge: AccuracyMatrix | None = None
    out_of_pool: AccuracyMatrix | None = None
    from_pool: FromPoolCells | None = None


class Report(BaseModel):
    model_config = ConfigDict(extra="forbid")

    created: str
    scoring_modes: list[str]
    bwt_definitions: dict[str, str]
    versions: dict[str, str]
    runs: list[RunSummary]
    plots: list[str] = Field(default_factory=list)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _read_config(run: Path) -> tuple[str | None, dict[str, Any] | None]:
    for name in CONFIG_FILES:
        path = run / name
        if path.is_file():
            try:
                raw = path.read_bytes()
                data = orjson.loads(raw) if name.endswith(".json") else yaml.safe_load(raw)
            except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
                raise ReportError(f"{path}: unreadable config ({exc})") from None
            return str(path), redact(data) if isinstance(data, dict) else {"value": data}
    return None, None


def _latest_scores(m: AccuracyMatrix) -> list[TaskScore]:
    out: list[TaskScore] = []
    for i, task in enumerate(m.tasks):
        for k in range(len(m.rows) - 1, -1, -1):
            acc = m.get(k, i)
            if acc is None:
                continue
            d = m.details.get(f"{k},{i}", {})
            out.append(
                TaskScore(
                    task=task,
                    after_stage=k + 1,
                    accuracy=acc,
                    correct=d.get("correct"),
                    total=d.get("total"),
                    missing=d.get("missing"),
                    gt_source=d.get("gt_source"),
                    approximate=bool(d.get("approximate", False)),
                    notes=list(d.get("notes", [])),
                )
            )
            break
    return out


def load_run(path: Path, label: str | None = None) -> RunSummary:
    """Read one run folder (or an `accuracy.json` path) into a summary."""
    path = Path(path)
    matrix_path = path if path.is_file() else path / ACCURACY_FILE
    run = matrix_path.parent
    if not matrix_path.is_file():
        raise ReportError(f"{run}: no {ACCURACY_FILE} (has this run finished a stage with evaluation on?)")
    try:
        matrix = AccuracyMatrix.load(matrix_path)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    if not any(v is not None for row in matrix.rows for v in row):
        raise ReportError(f"{matrix_path}: no evaluated cell (an empty matrix): nothing to report yet")
    config_file, config = _read_config(run)
    side: dict[str, AccuracyMatrix | None] = {}
    for key, name in (("format_errors", FORMAT_FILE), ("knowledge", KNOWLEDGE_FILE)):
        try:
            side[key] = AccuracyMatrix.load(run / name) if (run / name).is_file() else None
        except ValueError as exc:
            raise ReportError(str(exc)) from None
    try:
        side["out_of_pool"], from_pool = read_pool_cells(run)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    return RunSummary(
        label=label or run.resolve().name,
        path=str(run),
        mode=matrix.mode,
        matrix=matrix,
        metrics=matrix.metrics(),
        scores=_latest_scores(matrix),
        config_file=config_file,
        config=config,
        from_pool=from_pool,
        **side,
    )


def _unique_labels(paths: list[Path]) -> list[str]:
    names = [(p if p.is_dir() else p.parent).resolve() for p in paths]
    labels = [n.name for n in names]
    for i, lab in enumerate(labels):
        if labels.count(lab) > 1:
            labels[i] = f"{names[i].parent.name}/{lab}"
    seen: dict[str, int] = {}
    for i, lab in enumerate(labels):  # still equal (same folder twice): number them
        seen[lab] = seen.get(lab, 0) + 1
        if seen[lab] > 1:
            labels[i] = f"{lab}#{seen[lab]}"
    return labels


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v


def _fmt(v: float | None, approximate: bool = False) -> str:
    return "–" if v is None else f"{v:.2f}" + (" (approximate)" if approximate else "")


def _cell(m: AccuracyMatrix, k: int, i: int) -> str:
    """A matrix cell; "approximate" beside a number scored without the official ground truth."""
    return _fmt(m.get(k, i), bool(m.details.get(f"{k},{i}", {}).get("approximate", False)))


# ---- plots --------------------------------------------------------------------------------------------


def _save_png(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_heatmap(run: RunSummary, path: Path) -> None:
    """Accuracy matrix as a heatmap, one row per stage, cells annotated."""
    plot_matrix(run.matrix, path, f"{run.label} ({run.matrix.mode})", "accuracy (%)")


def plot_matrix(m: AccuracyMatrix, path: Path, title: str, what: str, cmap: str = "viridis") -> None:
    """A lower-triangular percent matrix as an annotated heatmap (accuracy, format errors, knowledge)."""
    import numpy as np
    from matplotlib.figure import Figure

    n = len(m.tasks)
    grid = np.full((n, n), np.nan)
    for k, row in enumerate(m.rows):
        for i, v in enumerate(row):
            if v is not None:
                grid[k, i] = v
    fig = Figure(figsize=(1.2 + 0.9 * n, 1.0 + 0.8 * n))
    ax = fig.subplots()
    img = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=100, cmap=cmap)
    fig.colorbar(img, ax=ax, label=what)
    for k in range(n):
        for i in range(n):
            if not np.isnan(grid[k, i]):
                ax.text(
                    i,
                    k,
                    f"{grid[k, i]:.1f}",
                    ha="center",
                    va="center",
                    color="white" if (grid[k, i] < 60) == (cmap == "viridis") else "black",
                    fontsize=8,
                )
    ax.set_xticks(range(n), m.tasks, rotation=45, ha="right")
    ax.set_yticks(range(n), [f"after {k + 1}: {t}" for k, t in enumerate(m.tasks)])
    ax.set_xlabel("evaluated task")
    ax.set_title(title)
    _save_png(fig, path)


def plot_over_stages(run: RunSummary, path: Path) -> None:
    """Each task's accuracy after every stage from the one that trained it on."""
    from matplotlib.figure import Figure

    m = run.matrix
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for i, task in enumerate(m.tasks):
        pts = [(k + 1, v) for k in range(i, len(m.rows)) if (v := m.get(k, i)) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=task)
    ax.set_xticks(range(1, len(m.tasks) + 1), [f"{k + 1}\n{t}" for k, t in enumerate(m.tasks)])
    ax.set_xlabel("after training stage")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{run.label}: accuracy over stages ({m.mode})")
    _save_png(fig, path)


def plot_comparison(runs: list[RunSummary], path: Path) -> None:
    """Runs side by side: the continual metrics, and each task's latest accuracy."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    ax_m, ax_t = fig.subplots(1, 2)
    width = 0.8 / len(runs)
    metric_names = ("MFT", "MFN", "MAA", "BWT")
    tasks: list[str] = []
    for r in runs:
        tasks += [t for t in r.matrix.tasks if t not in tasks]
    for j, r in enumerate(runs):
        vals = [_nan(getattr(r.metrics, name)) for name in metric_names]  # undefined: no bar, not a 0
        ax_m.bar(np.arange(len(metric_names)) + j * width, vals, width, label=f"{r.label} ({r.mode})")
        latest = {s.task: s.accuracy for s in r.scores}
        ax_t.bar(
            np.arange(len(tasks)) + j * width, [_nan(latest.get(t)) for t in tasks], width, label=r.label
        )
    offset = width * (len(runs) - 1) / 2
    ax_m.set_xticks(np.arange(len(metric_names)) + offset, metric_names)
    ax_m.axhline(0, color="black", linewidth=0.8)
    ax_m.set_ylabel("percent")
    ax_m.set_title("continual metrics")
    ax_m.legend(fontsize=8)
    ax_t.set_xticks(np.arange(len(tasks)) + offset, tasks, rotation=30, ha="right")
    ax_t.set_ylim(0, 100)
    ax_t.set_ylabel("accuracy (%)")
    ax_t.set_title("latest accuracy per task")
    _save_png(fig, path)


# ---- markdown -----------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _config_value(run: RunSummary, key: str) -> str:
    value = (run.config or {}).get(key)
    return "–" if value is None or isinstance(value, dict | list) else f"`{value}`"


def matrix_table(m: AccuracyMatrix) -> list[str]:
    """Markdown rows of a lower-triangular percent matrix (row = after stage, column = task)."""
    rows = [
        [f"{k + 1}: {m.tasks[k]}", *(_cell(m, k, i) if i <= k else "" for i in range(len(m.tasks)))]
        for k in range(len(m.rows))
    ]
    return _table(["after stage", *m.tasks], rows)


def pool_tables(r: RunSummary) -> list[str]:
    """The out-of-pool matrix and, from the stages after a task's own, whose pool its answers came from;
    nothing for a run that did not record them."""
    if r.out_of_pool is None:
        return []
    lines = [
        "",
        "Out of pool (% of answers that are none of the task's answers: superficial forgetting by content; "
        "empty for a task without a pool, such as a box task):",
        "",
        *matrix_table(r.out_of_pool),
    ]
    tasks = r.out_of_pool.tasks
    taken = later_from_pool(r.from_pool.cells, tasks) if r.from_pool is not None else []
    if any(v is not None for row in taken for v in row):
        rows = [[t, *(_fmt(v) for v in row)] for t, row in zip(tasks, taken, strict=True)]
        lines += [
            "",
            "Answered from another task's pool (%, row: task asked, column: whose answer it gave; mean over "
            "the stages after the asked task's own):",
            "",
            *_table(["asked", *tasks], rows),
        ]
    return lines


def render_markdown(report: Report) -> str:
    lines = [
        "# sefe report",
        "",
        f"Created {report.created}. Scoring mode(s): **{', '.join(report.scoring_modes)}** "
        "(`compat` = published CoIN/SEFE scorers, quirks included; `fixed` = corrected scorers).",
        "",
        "## Continual metrics",
        "",
    ]
    header = ["metric", *(f"{r.label} ({r.mode})" for r in report.runs)]
    rows = [[key, *(_config_value(r, key) for r in report.runs)] for key in DESCRIBE_KEYS]
    rows = [row for row in rows if any(v != "–" for v in row[1:])]
    rows += [[name, *(_fmt(getattr(r.metrics, name)) for r in report.runs)] for name in METRIC_NAMES]
    rows.append(["stages evaluated", *(f"{r.metrics.stages}/{len(r.matrix.tasks)}" for r in report.runs)])
    lines += _table(header, rows)
    lines += ["", *(f"- {name}: {text}" for name, text in report.bwt_definitions.items()), ""]
    if "compare.png" in report.plots:
        lines += ["![runs side by side](compare.png)", ""]
    for r in report.runs:
        m = r.matrix
        lines += [f"## Run `{r.label}`", "", f"Folder: `{r.path}`. Scoring mode: **{r.mode}**.", ""]
        if not r.metrics.complete:
            lines += [f"Partial run: {r.metrics.stages} of {len(m.tasks)} stages complete.", ""]
        lines += ["Accuracy matrix (row = after training stage, column = evaluated task):", ""]
        mrows = [
            [f"{k + 1}: {m.tasks[k]}", *(_cell(m, k, i) if i <= k else "" for i in range(len(m.tasks)))]
            for k in range(len(m.rows))
        ]
        lines += _table(["after stage", *m.tasks], mrows)
        for side, title in (
            (
                r.format_errors,
                "Format errors (% of answers not in the required answer style: superficial forgetting):",
            ),
            (
                r.knowledge,
                "Knowledge probe (% of questions whose correct candidate ranks first: essential forgetting):",
            ),
        ):
            if side is not None:
                lines += ["", title, "", *matrix_table(side)]
        lines += pool_tables(r)
        lines += ["", "Latest score per task:", ""]
        srows = [
            [
                s.task,
                str(s.after_stage),
                _fmt(s.accuracy, s.approximate),
                "–" if s.correct is None else f"{s.correct:g}",
                "–" if s.total is None else str(s.total),
                "–" if s.missing is None else str(s.missing),
                s.gt_source or "–",
            ]
            for s in r.scores
        ]
        cols = ["task", "after stage", "accuracy", "correct", "total", "missing", "ground truth"]
        lines += _table(cols, srows)
        notes = [f"- {s.task}: {n}" for s in r.scores for n in s.notes]
        if notes:
            lines += ["", "Scorer notes:", "", *notes]
        lines += [""]
        lines += [f"![{p}]({p})" for p in r.plots]
        if r.config is not None:
            lines += ["", f"Config (`{r.config_file}`, secrets redacted):", "", "```yaml"]
            lines += [yaml.safe_dump(r.config, sort_keys=False).rstrip(), "```"]
        lines += [""]
    lines += ["## Versions", "", *(f"- {k}: {v}" for k, v in report.versions.items()), ""]
    return "\n".join(lines)


def build_report(runs: list[Path], out: Path, plots: bool = True) -> Report:
    """Load the runs, write `report.json`, `report.md` and the PNGs into `out`, return the report."""
    if not runs:
        raise ReportError("no run folders given")
    paths = [Path(p) for p in runs]
    summaries = [load_run(p, label) for p, label in zip(paths, _unique_labels(paths), strict=True)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        scoring_modes=sorted({s.mode for s in summaries}),
        bwt_definitions=dict(BWT_VARIANTS),
        versions=package_versions(),
        runs=summaries,
    )
    if plots:
        for s in summaries:
            slug = _slug(s.label)
            for name, fn in ((f"heatmap_{slug}.png", plot_heatmap), (f"stages_{slug}.png", plot_over_stages)):
                fn(s, out / name)
                s.plots.append(name)
            if s.format_errors is not None:
                name = f"format_{slug}.png"
                plot_matrix(
                    s.format_errors, out / name, f"{s.label}: format errors", "format errors (%)", "magma_r"
                )
                s.plots.append(name)
            if s.out_of_pool is not None:
                name = f"pool_{slug}.png"
                title = f"{s.label}: out of pool"
                plot_matrix(s.out_of_pool, out / name, title, "out of pool (%)", "magma_r")
                s.plots.append(name)
            if s.knowledge is not None:
                name = f"knowledge_{slug}.png"
                plot_matrix(
                    s.knowledge, out / name, f"{s.label}: knowledge probe", "correct ranked first (%)"
                )
                s.plots.append(name)
        plot_comparison(summaries, out / "compare.png")
        report.plots.append("compare.png")
    payload = orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
    atomic_write_bytes(out / "report.json", payload)
    atomic_write_bytes(out / "report.md", render_markdown(report).encode())
    return report
