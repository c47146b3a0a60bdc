"""The Micro-CoIN report: per run its matrices, per method x data the mean and spread over seeds, and the
primary endpoints paired by seed with 95 % intervals, each finding worded from its interval (`endpoints.py`).

Definitions (T tasks, 0-based rows k = after stage k, columns i = task; only cells i <= k exist):
- accuracy metrics: MFT, MFN, MAA, BWT of the accuracy matrix (`metrics.py`; BWT over i < T);
- `FE_later`: mean format-error rate over all cells k > i (earlier tasks, evaluated after later stages):
  superficial forgetting; `FE_own`: mean of the diagonal (format errors right after learning a task);
- `K_own`, `K_final`: mean knowledge-probe rate on the diagonal / the last row (probed tasks);
  `K_BWT`: mean over probed i < T of K[T][i] - K[i][i] (negative = knowledge lost: essential forgetting).
- `OOP_later`: mean out-of-pool rate over the cells k > i; `rho_K`, `rho_L`: retention on learned tasks by
  the likelihood and the latent probe (`endpoints.py`).
Findings: "reproduces" / "does not reproduce" only when the paired 95 % interval excludes 0, else "not
established" with the interval (never a rule of thumb on spreads).
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from sefe.atomic import atomic_write_bytes
from sefe.evaluation.metrics import AccuracyMatrix
from sefe.evaluation.pool_cells import later_from_pool
from sefe.evaluation.result_files import ACCURACY_FILE, FORMAT_FILE, KNOWLEDGE_FILE
from sefe.micro.baselines import baselines
from sefe.micro.cells import cell_stats, line_accuracy
from sefe.micro.endpoints import PRIMARY, SECONDARY, compare, item_outcomes, value
from sefe.micro.latent import LATENT_FILE
from sefe.models.family import FAMILY

METRICS = (
    "MFT", "MFN", "MAA", "BWT", "FE_own", "FE_later", "FE_later_held", "OOP_later",
    "K_own", "K_final", "K_BWT", "rho_K", "rho_L",
)  # fmt: skip
SEFE = ("reglora", "asd")


KIND_TITLES = (
    ("accuracy", "Accuracy"),
    ("format_errors", "Format errors"),
    ("knowledge", "Knowledge probe"),
    ("latent", "Latent probe (linear probe fitted after the task's own stage, reapplied unchanged)"),
    ("acc_trained", "Accuracy on the items asked with the trained instruction line (exact match)"),
    ("acc_held", "Accuracy on the items asked with a held-out paraphrase (exact match)"),
    ("out_of_pool", "Out of pool (answers that are none of the task's answers)"),
    ("top_share", "Most frequent answer (share of items; 100 = one constant answer)"),
)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _cells(m: AccuracyMatrix) -> dict[tuple[int, int], float]:
    return {(k, i): v for k, row in enumerate(m.rows) for i, v in enumerate(row) if v is not None}


def run_metrics(
    acc: AccuracyMatrix, fmt: AccuracyMatrix | None, know: AccuracyMatrix | None
) -> dict[str, Any]:
    """The numbers of one run (None where undefined)."""
    a = acc.metrics()
    out: dict[str, Any] = {"MFT": a.MFT, "MFN": a.MFN, "MAA": a.MAA, "BWT": a.BWT, "stages": a.stages}
    if fmt is not None:
        c = _cells(fmt)
        out["FE_own"] = _mean([v for (k, i), v in c.items() if k == i])
        out["FE_later"] = _mean([v for (k, i), v in c.items() if k > i])
    if know is not None:
        c = _cells(know)
        last = max((k for k, _ in c), default=-1)
        out["K_own"] = _mean([v for (k, i), v in c.items() if k == i])
        out["K_final"] = _mean([v for (k, i), v in c.items() if k == last])
        out["K_BWT"] = _mean(
            [c[(last, i)] - c[(i, i)] for (k, i) in c if k == last and i < last and (i, i) in c]
        )
    return out


def load_run(folder: Path) -> dict[str, AccuracyMatrix | None]:
    def load(name: str) -> AccuracyMatrix | None:
        return AccuracyMatrix.load(folder / name) if (folder / name).is_file() else None

    return {
        "accuracy": load(ACCURACY_FILE),
        "format_errors": load(FORMAT_FILE),
        "knowledge": load(KNOWLEDGE_FILE),
        "latent": load(LATENT_FILE),
    }


def _stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    xs = [v for v in values if v is not None]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": sum(xs) / len(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def _mean_matrix(ms: Sequence[AccuracyMatrix]) -> list[list[float | None]]:
    return _mean_rows([m.rows for m in ms])


def _mean_rows(ms: Sequence[list[list[float | None]]]) -> list[list[float | None]]:
    """Cell-wise mean of lower-triangular matrices (cells missing in some are averaged over the others)."""
    if not ms:
        return []
    out: list[list[float | None]] = []
    for k in range(max(len(m) for m in ms)):
        row: list[float | None] = []
        for i in range(k + 1):
            vals = [v for m in ms if k < len(m) and i < len(m[k]) and (v := m[k][i]) is not None]
            row.append(sum(vals) / len(vals) if vals else None)
        out.append(row)
    return out


def _later_mean(rows: list[list[float | None]]) -> float | None:
    """Mean over the cells k > i (earlier tasks after later stages) of a lower-triangular matrix."""
    return _mean([v for k, row in enumerate(rows) for i, v in enumerate(row) if i < k and v is not None])


def _mean_full(ms: Sequence[list[list[float | None]]]) -> list[list[float | None]]:
    """Cell-wise mean of square matrices (None where no matrix has the cell)."""
    if not ms:
        return []
    n = len(ms[0])
    out: list[list[float | None]] = []
    for i in range(n):
        row: list[float | None] = []
        for j in range(n):
            vals = [v for m in ms if (v := m[i][j]) is not None]
            row.append(sum(vals) / len(vals) if vals else None)
        out.append(row)
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pm(s: dict[str, Any], digits: int = 1) -> str:
    if s["mean"] is None:
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def _matrix_md(tasks: list[str], rows: list[list[float | None]]) -> list[str]:
    head = "| after stage | " + " | ".join(tasks) + " |"
    sep = "|" + "---|" * (len(tasks) + 1)
    body = [
        f"| {k + 1}: {tasks[k]} | "
        + " | ".join(_fmt(r[i]) if i < len(r) else "" for i in range(len(tasks)))
        + " |"
        for k, r in enumerate(rows)
    ]
    return [head, sep, *body]


def _plots(out: Path, groups: dict[str, Any], tasks: list[str]) -> list[str]:
    import numpy as np
    from matplotlib.figure import Figure

    from sefe.evaluation.report import _save_png

    names = []
    n = len(tasks)
    kinds = (
        ("accuracy", "accuracy (%)", "viridis"),
        ("format_errors", "format errors (%)", "magma_r"),
        ("knowledge", "correct ranked first (%)", "viridis"),
        ("latent", "latent probe (%)", "viridis"),
    )
    for kind, label, cmap in kinds:
        labels = [g for g in groups if groups[g]["mean_matrices"].get(kind)]
        if not labels:
            continue
        fig = Figure(figsize=(3.2 * len(labels) + 1, 3.4))
        axes = fig.subplots(1, len(labels), squeeze=False)[0]
        img = None
        for ax, g in zip(axes, labels, strict=True):
            grid = np.full((n, n), np.nan)
            for k, row in enumerate(groups[g]["mean_matrices"][kind]):
                for i, v in enumerate(row):
                    if v is not None:
                        grid[k, i] = v
            img = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=100, cmap=cmap)
            for k in range(n):
                for i in range(n):
                    if not np.isnan(grid[k, i]):
                        ax.text(i, k, f"{grid[k, i]:.0f}", ha="center", va="center", fontsize=7, color="grey")
            ax.set_xticks(range(n), tasks, rotation=60, fontsize=7)
            first = ax is axes[0]  # rows are the same stages in every panel: label them once
            ax.set_yticks(range(n), [f"after {t}" for t in tasks] if first else [], fontsize=7)
            ax.set_title(f"{g} (n={groups[g]['seeds']})", fontsize=9)
        if img is not None:
            fig.colorbar(img, ax=list(axes), label=label, shrink=0.8)
        name = f"{kind}.png"
        _save_png(fig, out / name)
        names.append(name)
    fig = Figure(figsize=(10, 3.6))
    ax = fig.subplots()
    shown = ("MFT", "MFN", "MAA", "BWT", "FE_later", "K_final", "K_BWT")
    width = 0.8 / max(1, len(groups))
    for j, (g, stats) in enumerate(groups.items()):
        means = [_nan(stats["metrics"][m]["mean"]) for m in shown]
        stds = [stats["metrics"][m]["std"] or 0 for m in shown]
        ax.bar(np.arange(len(shown)) + j * width, means, width, yerr=stds, capsize=2, label=g)
    ax.set_xticks(np.arange(len(shown)) + width * (len(groups) - 1) / 2, shown)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("percent / points")
    ax.legend(fontsize=8)
    ax.set_title("Micro-CoIN: mean ± std over seeds")
    _save_png(fig, out / "metrics.png")
    names.append("metrics.png")
    return names


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_report": [round(x, 2) for x in load] if load else None,
    }


def ceilings(groups: dict[str, Any], tasks: list[str]) -> dict[str, list[float | None]]:
    """Per group, each task's mean accuracy right after it was learned (the matrix diagonal)."""
    out: dict[str, list[float | None]] = {}
    for g, stats in groups.items():
        rows = stats["mean_matrices"].get("accuracy") or []
        out[g] = [rows[i][i] if i < len(rows) and i < len(rows[i]) else None for i in range(len(tasks))]
    return out


def alone_ceiling(
    out: Path, tasks: list[str], name_of: Any, root: Path
) -> dict[str, dict[str, float | None]]:
    """Per task trained alone from the warm start (seed 0): accuracy (all items, trained lines, held-out
    lines), likelihood and latent probe (%)."""
    found: dict[str, dict[str, float | None]] = {}
    for t in tasks:
        m = load_run(out / "runs" / name_of(t))
        if m["accuracy"] is not None:
            found[t] = {kind: (mat.get(0, 0) if mat is not None else None) for kind, mat in m.items()}
            split = line_accuracy(out / "runs" / name_of(t), [t], root, 0, 0) or {}
            found[t].update(acc_trained=split.get("trained"), acc_held=split.get("held-out"))
    return found


def write_report(opts: Any, warm: Path, timings: dict[str, float]) -> Path:
    """Collect every run under DIR/runs, write DIR/report.json, DIR/report.md and the plots."""
    out = Path(opts.out)
    runs: list[dict[str, Any]] = []
    groups: dict[str, Any] = {}
    from sefe.micro.options import alone_name, data_root, sweep_name

    tasks = list(opts.tasks)
    base_of = baselines(data_root(opts, 0), tasks)  # stratified tests: the same majority in every seed
    base = [base_of[t].majority for t in tasks]
    n_items = [base_of[t].items for t in tasks]
    items_of: dict[tuple[str, int], Any] = {}

    unfinished: list[str] = []

    def collect(name: str, method: str, data: str, seed: int) -> dict[str, Any] | None:
        """One run's entry (None until every stage is evaluated and its latent probe recorded: a run cut
        short would enter the seed table with fewer stages); its item outcomes kept aside."""
        m = load_run(out / "runs" / name)
        acc = m["accuracy"]
        if acc is None or len(acc.rows) < len(tasks) or m["latent"] is None:
            if acc is not None or (out / "runs" / name).is_dir():
                unfinished.append(name)
            return None
        root = data_root(opts, seed)
        cells = cell_stats(out / "runs" / name, tasks, root)
        items = item_outcomes(out / "runs" / name, root, tasks)
        if name == opts.run_name(method, data, seed):
            items_of[(f"{method}/{data}", seed)] = items
        return {
            "name": name,
            "method": method,
            "data": data,
            "seed": seed,
            "seconds": timings.get(name),
            "metrics": {
                **run_metrics(acc, m["format_errors"], m["knowledge"]),
                "OOP_later": _later_mean(cells["out_of_pool"]),
                "rho_K": value("rho_K", items, len(tasks), base),
                "rho_L": value("rho_L", items, len(tasks), base),
                "FE_later_held": value("FE_later_held", items, len(tasks), base),
            },
            **{k: (v.model_dump(mode="json", exclude={"details"}) if v else None) for k, v in m.items()},
            "top_share": {"tasks": tasks, "rows": cells["top_share"]},
            "out_of_pool": {"tasks": tasks, "rows": cells["out_of_pool"]},
            "acc_trained": {"tasks": tasks, "rows": cells["acc_trained"]},
            "acc_held": {"tasks": tasks, "rows": cells["acc_held"]},
            "from_pool": cells["from_pool"],
        }

    for seed in range(opts.seeds):
        for method, data in opts.combos():
            entry = collect(opts.run_name(method, data, seed), method, data, seed)
            if entry is not None:
                runs.append(entry)
    sweep = []
    for lam in sorted({*opts.lam_sweep, opts.lam}):
        name = opts.run_name("reglora", "asd", 0) if lam == opts.lam else sweep_name(lam)
        entry = collect(name, "reglora", "asd", 0)
        if entry is not None:
            sweep.append({"lam": lam, "name": name, "metrics": entry["metrics"]})
    for method, data in opts.combos():
        mine = [r for r in runs if r["method"] == method and r["data"] == data]
        if mine:
            mats = {
                kind: _mean_matrix([AccuracyMatrix.model_validate(r[kind]) for r in mine if r[kind]])
                for kind in ("accuracy", "format_errors", "knowledge", "latent")
            }
            for kind in ("top_share", "out_of_pool", "acc_trained", "acc_held"):
                mats[kind] = _mean_rows([r[kind]["rows"] for r in mine])
            mats["from_pool_later"] = _mean_full([later_from_pool(r["from_pool"], tasks) for r in mine])
            groups[f"{method}/{data}"] = {
                "method": method,
                "data": data,
                "seeds": len(mine),
                "metrics": {k: _stats([r["metrics"].get(k) for r in mine]) for k in METRICS},
                "mean_matrices": mats,
            }
    by_run = {(f"{r['method']}/{r['data']}", r["seed"]): r for r in runs}
    results = [
        res
        for ep in (*PRIMARY, *SECONDARY)
        if (res := compare(ep, by_run, items_of, n_items, base)) is not None
    ]
    found = [{"question": r.endpoint.claim, "verdict": r.verdict, "text": r.text} for r in results]
    warm_info = (
        orjson.loads((warm / "warmstart.json").read_bytes()) if (warm / "warmstart.json").is_file() else {}
    )
    plots = _plots(out, groups, tasks) if groups else []
    report = {
        "benchmark": "micro-coin",
        "options": opts.model_dump(mode="json"),
        "machine": machine(),
        "warm_start": {
            k: warm_info.get(k) for k in ("parameters", "final_loss", "seconds", "options", "vision")
        },
        "groups": groups,
        "ceiling": {
            "baselines": {t: b.model_dump(mode="json") for t, b in base_of.items()},
            "learned": ceilings(groups, tasks),
            "alone": alone_ceiling(out, tasks, alone_name, data_root(opts, 0)),
        },
        "lambda_sweep": sweep,
        "unfinished": unfinished,
        "endpoints": [r.model_dump(mode="json") for r in results],
        "findings": found,
        "runs": runs,
        "plots": plots,
    }
    atomic_write_bytes(out / "report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    atomic_write_bytes(out / "report.md", render(report, tasks).encode())
    return out / "report.md"


def headline_table(report: dict[str, Any]) -> list[str]:
    cols = ("MFT", "MFN", "MAA", "BWT", "FE_later", "FE_later_held", "OOP_later", "K_final", "rho_K", "rho_L")
    lines = ["| method | data | seeds | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 3)]
    for g in report["groups"].values():
        label = "**SEFE** (reglora)" if (g["method"], g["data"]) == SEFE else g["method"]
        lines.append(
            f"| {label} | {g['data']} | {g['seeds']} | "
            + " | ".join(_pm(g["metrics"][c], 2 if c.startswith("rho") else 1) for c in cols)
            + " |"
        )
    return lines


def _ceiling_md(report: dict[str, Any], tasks: list[str]) -> list[str]:
    """What each task reached right after it was learned, beside the majority class and the best constant
    answer: only tasks well above both hold knowledge whose loss the later rows can show."""
    ceiling = report.get("ceiling") or {}
    learned, base = ceiling.get("learned") or {}, ceiling.get("baselines") or {}
    if not learned:
        return []
    lines = [
        "## Ceiling: accuracy right after learning each task (%, mean over seeds)",
        "",
        "| group | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    alone = ceiling.get("alone") or {}
    for kind, label in (
        ("accuracy", "accuracy"),
        ("acc_trained", "accuracy, trained line"),
        ("acc_held", "accuracy, held-out line"),
        ("knowledge", "likelihood probe"),
        ("latent", "latent probe"),
    ):
        if alone:
            cells = " | ".join(_fmt((alone.get(t) or {}).get(kind)) for t in tasks)
            lines.append(f"| **trained alone** (seed 0), {label} | {cells} |")
    lines += [f"| {g} | " + " | ".join(_fmt(v) for v in row) + " |" for g, row in learned.items()]
    for key, label in (("majority", "majority class"), ("best_constant", "best constant answer")):
        lines.append(f"| {label} | " + " | ".join(_fmt((base.get(t) or {}).get(key)) for t in tasks) + " |")
    lines.append("")
    if alone:
        short = [
            t
            for t in tasks
            if (acc := (alone.get(t) or {}).get("acc_trained")) is None
            or acc < (base.get(t) or {}).get("majority", 0.0) + 30
        ]
        lines += [
            "Every task trained alone is at least 30 points above its majority class on the trained line."
            if not short
            else f"Trained alone, {', '.join(short)} did not reach 30 points above the majority class on the "
            "trained line: their columns cannot show forgetting.",
            "",
        ]
    vision = (report.get("warm_start") or {}).get("vision") or {}
    held = vision.get("held_out") or {}
    if held:
        shown = ", ".join(f"{k} {v:g}" for k, v in held.items())
        lines += [f"Warm-start vision tower on held-out warm-start pictures: {shown}.", ""]
    return lines


def render(report: dict[str, Any], tasks: list[str]) -> str:
    o = report["options"]
    proj_lr = o["lr"] / 10 if o.get("projector_lr") is None else o["projector_lr"]
    ws = report["warm_start"]
    lines = [
        "# Micro-CoIN report",
        "",
        f"Tasks in order: {', '.join(tasks)}. {o['seeds']} seed(s); train {o['n_train']} / test "
        f"{o['n_test']} records per task; {o['epochs']:g} epoch(s) per task, batch {o['batch_size']}, "
        f"LoRA r {o['lora_r']}, "
        f"lr {o['lr']:g}, projector lr {proj_lr:g}, RegLoRA λ {o['lam']:g}, ASD X = {o['x']:g} (scene "
        "backend, data distractors; explanations state the asked fact only). Half of every test asks with a "
        "held-out instruction line. "
        f"Warm start ({o.get('family') or FAMILY.name} family): {ws.get('parameters')} parameters, final "
        f"loss {_fmt(ws.get('final_loss'), 3)}. "
        "Scoring: CoIN scorers in `fixed` mode.",
        "",
        *(
            [
                f"**Not finished (left out of every table):** {', '.join(report['unfinished'])}. Rerun the "
                "same `sefe micro run` command to finish them; finished runs are kept.",
                "",
            ]
            if report.get("unfinished")
            else []
        ),
        "## Headline (mean ± std over seeds)",
        "",
        *headline_table(report),
        "",
        "MFT/MFN/MAA/BWT: accuracy (%). FE_later: format errors on earlier tasks after later stages (%, "
        "superficial forgetting by form; FE_later_held: on the items asked with a held-out paraphrase of the "
        "instruction line); OOP_later: their answers in none of the task's answers (%, by "
        "content). K_final: knowledge probe on the last row (%); K_BWT: its backward transfer "
        "(points; negative = essential forgetting). Definitions: `sefe/micro/report.py`, docs/FORGETTING.md.",
        "",
        "## Findings",
        "",
        "Arms paired by seed (both arms of a seed share its data and seeds); 95 % Student-t interval over "
        "seeds and a percentile bootstrap over test items; a finding reproduces only when its interval "
        "excludes 0.",
        "",
        *(f"- **{f['verdict']}**: {f['text']}" for f in report["findings"]),
        "",
    ]
    if not report["findings"]:
        lines += ["(no finding: the needed method/data combinations were not run)", ""]
    lines += _ceiling_md(report, tasks)
    sweep = report.get("lambda_sweep") or []
    if len(sweep) > 1:
        cols = ("MFT", "FE_later", "rho_K", "rho_L")
        lines += [
            "## RegLoRA λ sweep (reglora/asd, seed 0): stability against plasticity",
            "",
            "| λ | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols),
            *(
                f"| {e['lam']:g} | "
                + " | ".join(_fmt(e["metrics"].get(c), 2 if c.startswith("rho") else 1) for c in cols)
                + " |"
                for e in sweep
            ),
            "",
        ]
    lines += [f"![{p}]({p})" for p in report["plots"]]
    for g, stats in report["groups"].items():
        lines += ["", f"## {g} (mean over {stats['seeds']} seed(s))", ""]
        for kind, title in KIND_TITLES:
            rows = stats["mean_matrices"].get(kind)
            if rows:
                lines += [f"{title} (%):", "", *_matrix_md(tasks, rows), ""]
        taken = stats["mean_matrices"].get("from_pool_later")
        if taken and any(v is not None for row in taken for v in row):
            lines += [
                "Answered from another task's pool (%, rows: task asked, columns: whose answer it gave; mean "
                "over the stages after the asked task's own):",
                "",
                "| asked | " + " | ".join(tasks) + " |",
                "|---|" + "---|" * len(tasks),
                *(
                    f"| {t} | " + " | ".join(_fmt(v) for v in row) + " |"
                    for t, row in zip(tasks, taken, strict=True)
                ),
                "",
            ]
    lines += [
        "## Runs",
        "",
        "| run | seconds | MFT | MFN | BWT | FE_later | K_BWT |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        m = r["metrics"]
        lines.append(
            f"| {r['name']} | {_fmt(r['seconds'], 0)} | {_fmt(m['MFT'])} | {_fmt(m['MFN'])} | "
            f"{_fmt(m['BWT'])} | {_fmt(m.get('FE_later'))} | {_fmt(m.get('K_BWT'))} |"
        )
    mach = report["machine"]
    lines += [
        "",
        f"Machine: {mach['platform']}, {mach['cpus']} CPUs, load average at report time "
        f"{mach['load_average_at_report']}.",
        "",
    ]
    return "\n".join(lines)
