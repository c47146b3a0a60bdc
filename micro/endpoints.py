"""The primary endpoints of a Micro-CoIN comparison, per run and paired across arms.

Per run: `FE_later` (format errors on earlier tasks after later stages, %), `rho_K` and `rho_L` (retention on
learned tasks by the likelihood and the latent probe: ρ_i = (X[T][i] - base_i) / (X[i][i] - base_i) for tasks
with X[i][i] >= base_i + 30, base_i the majority class of task i's stratified test, averaged over i < T).
Across arms: the paired difference over seeds with its 95 % t-interval and a bootstrap over test items, and a
verdict from the interval (`stats.py`). Item-level outcomes come from the run folder: the prediction files
(format flags), `knowledge.json` (`known` per item) and `latent.json` (`correct` per item).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from sefe.micro.stats import Interval, NoDefinedDraw, bootstrap_items, paired_t, retention, verdict

MARGIN = 30.0  # points above the base a task must reach at its own stage to count for retention
#: format-error endpoints (points) and the item kind each averages
FE_METRICS = {"FE_later": "FE", "FE_later_held": "FE_held"}


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    a: str  # "method/data"
    b: str
    claim: str  # what "reproduces" means, in words
    control: bool = False


PRIMARY: tuple[Endpoint, ...] = (
    Endpoint(metric="FE_later", a="lora/original", b="lora/asd", claim="ASD data reduces format errors on "
             "earlier tasks (superficial forgetting), LoRA original minus LoRA + ASD"),
    Endpoint(metric="FE_later_held", a="lora/original", b="lora/asd", claim="ASD data reduces format errors "
             "on earlier tasks asked with a held-out paraphrase of their instruction line (the cure is not "
             "line-to-style memory), LoRA original minus LoRA + ASD"),
    Endpoint(metric="rho_K", a="reglora/asd", b="lora/asd", claim="RegLoRA retains more of what was learned "
             "beyond ASD, by the likelihood probe (SEFE minus LoRA + ASD)"),
    Endpoint(metric="rho_L", a="reglora/asd", b="lora/asd", claim="RegLoRA retains more of what was learned "
             "beyond ASD, by the latent probe (SEFE minus LoRA + ASD)"),
    Endpoint(metric="rho_K", a="replay/asd", b="lora/asd", control=True, claim="positive control: replay "
             "raises retention (likelihood probe); if not, this benchmark cannot see retention"),
)  # fmt: skip
#: not primary: what `sefe demo` compares (plain LoRA against SEFE, both parts at once)
SECONDARY: tuple[Endpoint, ...] = (
    Endpoint(metric="FE_later", a="lora/original", b="reglora/asd", claim="SEFE has fewer format errors on "
             "earlier tasks than plain LoRA (secondary: LoRA original minus SEFE)"),
    Endpoint(metric="rho_K", a="reglora/asd", b="lora/original", claim="SEFE retains more than plain LoRA, "
             "by the likelihood probe (secondary: SEFE minus LoRA original)"),
)  # fmt: skip


class EndpointResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: Endpoint
    seeds: list[int]
    a_values: list[float]
    b_values: list[float]
    t: Interval
    bootstrap: tuple[float, float] | None  # 95 % percentile interval over test items
    verdict: str
    text: str


# ---- item-level outcomes of one run ------------------------------------------------------------------------


def _test_items(root: Path, task: str) -> tuple[list[str], list[bool]]:
    """Per test item of `task`, in test.json order: its question id, and whether it is asked with a held-out
    paraphrase of its instruction line (`instruction`). One read of the file for both."""
    from sefe.coin.layout import evaluation_file

    records = orjson.loads(evaluation_file(root, task).read_bytes())
    ids = [str(r["question_id"]) for r in records]
    return ids, [str(r.get("instruction", "trained")) == "held-out" for r in records]


def item_outcomes(run: Path, root: Path, tasks: list[str]) -> dict[str, dict[tuple[int, int], list[float]]]:
    """Per kind (`FE`: format error, `K`: likelihood-probe known, `L`: latent-probe correct), per cell (k, i),
    0/1 per test item of task i in test.json order (cells without item data are absent). `FE_held`: the `FE`
    flags of the items asked with a held-out paraphrase, NaN for the others (same length, so one bootstrap
    draw over task i's items serves every kind)."""
    from sefe.evaluation.format_checks import format_error_flags
    from sefe.sefe_train.run_layout import stage_dir

    out: dict[str, dict[tuple[int, int], list[float]]] = {"FE": {}, "FE_held": {}, "K": {}, "L": {}}
    items = {t: _test_items(root, t) for t in tasks}
    ids = {t: item_ids for t, (item_ids, _) in items.items()}
    held = {t: flags for t, (_, flags) in items.items()}
    for k, task_k in enumerate(tasks):
        for i, task_i in enumerate(tasks[: k + 1]):
            path = stage_dir(run, k + 1, task_k) / "eval" / f"{task_i}.jsonl"
            if not path.is_file():
                continue
            preds = {}
            for line in path.read_bytes().splitlines():
                if line.strip():
                    p = orjson.loads(line)
                    preds[str(p["question_id"])] = (str(p.get("prompt") or ""), str(p.get("text", "")))
            if set(preds) >= set(ids[task_i]):
                qs, answers = zip(*(preds[q] for q in ids[task_i]), strict=True)
                flags = format_error_flags(task_i, list(qs), list(answers), root)
                out["FE"][(k, i)] = [float(f) for f in flags]
                out["FE_held"][(k, i)] = [
                    float(f) if h else float("nan") for f, h in zip(flags, held[task_i], strict=True)
                ]
    for kind, file, field in (("K", "knowledge.json", "known"), ("L", "latent.json", "correct")):
        if (run / file).is_file():
            details = orjson.loads((run / file).read_bytes()).get("details") or {}
            for key, d in details.items():
                k, i = (int(x) for x in key.split(","))
                if isinstance(d, dict) and d.get(field) and len(d[field]) == len(ids[tasks[i]]):
                    out[kind][(k, i)] = [float(v) for v in d[field]]
    return out


def _cell_means(
    cells: dict[tuple[int, int], list[float]], draws: list[Any] | None
) -> dict[tuple[int, int], Any]:
    """Percent per cell over its non-NaN items: a float, or with `draws` (per task, reps x n indices) an array
    of reps values."""
    import numpy as np

    out = {}
    with warnings.catch_warnings():  # a draw without items of a kind gives NaN, dropped by the bootstrap
        warnings.simplefilter("ignore", RuntimeWarning)
        for (k, i), flags in cells.items():
            arr = np.asarray(flags, dtype=float)
            if draws is not None:
                out[(k, i)] = 100.0 * np.nanmean(arr[draws[i]], axis=1)
            else:
                out[(k, i)] = 100.0 * float(np.nanmean(arr))
    return out


def value(
    metric: str,
    items: dict[str, dict[tuple[int, int], list[float]]],
    n_tasks: int,
    base: list[float],
    draws: list[Any] | None = None,
    eligible: list[int] | None = None,
) -> Any:
    """An endpoint of one run from its item outcomes (None where undefined); `eligible`: the tasks that count
    for ρ (default: those learned MARGIN above their base on the full data)."""
    if metric in FE_METRICS:
        cells = _cell_means(items[FE_METRICS[metric]], draws)
        later = [v for (k, i), v in cells.items() if k > i]
        return sum(later) / len(later) if later else None
    cells = _cell_means(items["K" if metric == "rho_K" else "L"], draws)
    last = n_tasks - 1
    if eligible is None:
        eligible = learned(metric, items, n_tasks, base)
    rhos = [
        (cells[(last, i)] - base[i]) / (cells[(i, i)] - base[i])
        for i in eligible
        if (last, i) in cells and (i, i) in cells
    ]
    return sum(rhos) / len(rhos) if rhos else None


def learned(
    metric: str, items: dict[str, dict[tuple[int, int], list[float]]], n_tasks: int, base: list[float]
) -> list[int]:
    """Tasks i < T whose own-stage probe rate is at least MARGIN above their base (full data)."""
    cells = _cell_means(items["K" if metric == "rho_K" else "L"], None)
    last = n_tasks - 1
    return [
        i
        for i in range(last)
        if retention(cells.get((last, i)), cells.get((i, i)), base[i], MARGIN) is not None
    ]


# ---- paired across arms ----------------------------------------------------------------------------------


def compare(
    ep: Endpoint,
    runs: dict[tuple[str, int], dict[str, Any]],
    items: dict[tuple[str, int], dict[str, dict[tuple[int, int], list[float]]]],
    n_items: list[int],
    base: list[float],
    reps: int = 2000,
) -> EndpointResult | None:
    """The paired comparison of one endpoint: `runs[(group, seed)]["metrics"]` per run, `items` likewise."""
    seeds = sorted(
        s
        for (g, s) in runs
        if g == ep.a
        and (ep.b, s) in runs
        and runs[(ep.a, s)]["metrics"].get(ep.metric) is not None
        and runs[(ep.b, s)]["metrics"].get(ep.metric) is not None
    )
    if not seeds:
        return None
    a = [float(runs[(ep.a, s)]["metrics"][ep.metric]) for s in seeds]
    b = [float(runs[(ep.b, s)]["metrics"][ep.metric]) for s in seeds]
    t = paired_t(a, b)
    boot = None
    have = all((g, s) in items for g in (ep.a, ep.b) for s in seeds)
    if have:
        n = len(n_items)
        fixed = {
            (g, s): None if ep.metric in FE_METRICS else learned(ep.metric, items[(g, s)], n, base)
            for g in (ep.a, ep.b)
            for s in seeds
        }

        def diff(draws: list[Any]) -> Any:
            total = 0.0
            for s in seeds:
                va = value(ep.metric, items[(ep.a, s)], n, base, draws, fixed[(ep.a, s)])
                vb = value(ep.metric, items[(ep.b, s)], n, base, draws, fixed[(ep.b, s)])
                if va is None or vb is None:
                    raise _NoBootstrap
                total = total + (va - vb)
            return total / len(seeds)

        try:
            boot = bootstrap_items(n_items, diff, reps=reps)
        except (_NoBootstrap, NoDefinedDraw):
            boot = None
    v = verdict(t)
    unit = "points" if ep.metric in FE_METRICS else "(ρ, 1 = all kept)"
    ci = f"95 % CI [{t.low:+.3g}, {t.high:+.3g}]" if t.low is not None else "one seed: no interval"
    bs = f"; over test items [{boot[0]:+.3g}, {boot[1]:+.3g}]" if boot else ""
    word = {"reproduces": "reproduces", "does not reproduce": "does NOT reproduce"}.get(v, "not established")
    text = f"{ep.claim}: mean difference {t.mean:+.3g} {unit} over {t.n} seed(s), {ci}{bs}: {word}."
    if v == "not established" and t.low is not None:
        text += " No effect can be claimed at this size."
    return EndpointResult(
        endpoint=ep, seeds=seeds, a_values=a, b_values=b, t=t, bootstrap=boot, verdict=v, text=text
    )


class _NoBootstrap(Exception):
    """A resampled run lacks an endpoint value (cells without item data)."""
