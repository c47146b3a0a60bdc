"""Evaluation after stage k of `sefe train`: tasks 1..k on the merged model -> row k of `accuracy.json`.

Why here and not in the runner: it only glues the inference and scoring owners' APIs to the run layout.
Predictions go to `<k>_<Task>.partial/eval/<Task>.jsonl` (appended and flushed by `run_inference`, so a kill
during evaluation resumes with the questions still unanswered); scores to `eval/scores.json`, and the matrix
cell (k, i) to `<run>/accuracy.json` (atomic rewrite). Beside it, the same cell of two more matrices that
split forgetting in two: `<run>/format_errors.json` (percent of answers not in the required answer style:
superficial forgetting, `format_checks.py`) and `<run>/knowledge.json` (percent of questions whose correct
candidate the model ranks first by likelihood: essential forgetting, `probe.py`; tasks without candidates
stay empty). Details per task go to `eval/format.json` and `eval/probe.json`. With the format checks, the
answers are also held against the tasks' answer pools (`evaluation/pool_cells.py`): `<run>/out_of_pool.json`
(percent of answers in none of the task's pool) and `<run>/from_pool.json` (percent from each other task's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from sefe.atomic import atomic_write_bytes
from sefe.errors import InputError
from sefe.evaluation.result_files import FORMAT_FILE, KNOWLEDGE_FILE
from sefe.models.family import ModelFamily
from sefe.sefe_train.config import RunConfig


def _limited_test_file(test: Path, limit: int | None, out_dir: Path, task: str) -> Path:
    """With `eval.max_samples`, score against the same first N records inference answered."""
    if limit is None:
        return test
    records = orjson.loads(test.read_bytes())
    if not isinstance(records, list):
        raise InputError(f"{test}: a CoIN test file must be a JSON array of records")
    target = out_dir / f"{task}.test.json"
    atomic_write_bytes(target, orjson.dumps(records[:limit]))
    return target


def evaluate_stage(
    cfg: RunConfig,
    k: int,
    merged: Path,
    eval_dir: Path,
    accuracy_path: Path,
    model: tuple[Any, Any] | None = None,
) -> dict[str, float]:
    """Evaluate tasks 1..k (1-based k) and record them; `model` is the in-memory merged pair, if at hand."""
    from sefe.evaluation.inference import run_inference
    from sefe.evaluation.metrics import AccuracyMatrix
    from sefe.evaluation.scorers import find_gt, score_predictions
    from sefe.sefe_train.stage_model import run_family

    family = run_family(cfg)
    root = cfg.resolved_data_root()
    tasks = cfg.tasks[:k]
    names = [t.name for t in tasks]
    preds = run_inference(
        model if model is not None else merged,
        root,
        names,
        eval_dir,
        batch_size=cfg.eval.batch_size,
        max_new_tokens=cfg.eval.max_new_tokens,
        limit=cfg.eval.max_samples,
        model_id=f"{Path(cfg.output_dir).name}-{k}",
        dtype=cfg.model.dtype,
        scienceqa_instruction=cfg.eval.scienceqa_instruction,
        family=family,
    )
    all_names = [t.name for t in cfg.tasks]
    if accuracy_path.exists():
        matrix = AccuracyMatrix.load(accuracy_path)
        if matrix.tasks != all_names and all_names[: len(matrix.tasks)] == matrix.tasks:  # tasks appended
            matrix = AccuracyMatrix(
                tasks=all_names, mode=matrix.mode, rows=matrix.rows, details=matrix.details
            )
        if matrix.tasks != all_names or matrix.mode != cfg.eval.mode:
            raise InputError(
                f"{accuracy_path}: holds tasks {matrix.tasks} in {matrix.mode!r} mode, but this run has "
                f"{all_names} in {cfg.eval.mode!r} mode"
            )
    else:
        matrix = AccuracyMatrix(tasks=all_names, mode=cfg.eval.mode)
    scores: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        test = _limited_test_file(cfg.test_path(task), cfg.eval.max_samples, eval_dir, task.name)
        gt = cfg.gt_path(task) or find_gt(root, task.name, cfg.eval.mode, cfg.eval.allow_approximate)
        result = score_predictions(
            task.name, preds[task.name], test, gt=gt, mode=cfg.eval.mode, data_root=root
        )
        matrix.record(k - 1, i, result)
        scores[task.name] = result.model_dump(mode="json")
    atomic_write_bytes(eval_dir / "scores.json", orjson.dumps(scores, option=orjson.OPT_INDENT_2))
    matrix.save(accuracy_path)
    run_dir = accuracy_path.parent
    if cfg.eval.format_checks:
        _record_format_errors(cfg, k, preds, eval_dir, run_dir / FORMAT_FILE)
        record_pool_rows(cfg, k, preds, run_dir)
    if cfg.eval.probe:
        _record_probe(cfg, k, merged, model, family, eval_dir, run_dir / KNOWLEDGE_FILE)
    return {name: float(s["accuracy"]) for name, s in scores.items()}


def _side_matrix(path: Path, cfg: RunConfig) -> Any:
    """A format-error / knowledge matrix of this run (same shape and mode as the accuracy matrix)."""
    from sefe.evaluation.metrics import AccuracyMatrix

    names = [t.name for t in cfg.tasks]
    if path.exists():
        m = AccuracyMatrix.load(path)
        if m.tasks == names[: len(m.tasks)]:
            return AccuracyMatrix(tasks=names, mode=m.mode, rows=m.rows, details=m.details)
    return AccuracyMatrix(tasks=names, mode=cfg.eval.mode)


def _record_format_errors(cfg: RunConfig, k: int, preds: dict[str, Path], eval_dir: Path, path: Path) -> None:
    from sefe.evaluation.format_checks import format_errors_of_predictions

    matrix = _side_matrix(path, cfg)
    out: dict[str, Any] = {}
    for i, task in enumerate(cfg.tasks[:k]):
        res = format_errors_of_predictions(task.name, preds[task.name], cfg.resolved_data_root())
        matrix.set(k - 1, i, res.rate, res.model_dump(mode="json"))
        out[task.name] = res.model_dump(mode="json")
    atomic_write_bytes(eval_dir / "format.json", orjson.dumps(out, option=orjson.OPT_INDENT_2))
    matrix.save(path)


def record_pool_rows(cfg: RunConfig, k: int, preds: dict[str, Path], run_dir: Path) -> None:
    """Row k of `out_of_pool.json` and `from_pool.json`: the answers against the tasks' answer pools."""
    from sefe.evaluation.pool_cells import prediction_texts, record_pool_cells

    answers = {t.name: texts for t in cfg.tasks[:k] if (texts := prediction_texts(preds[t.name])) is not None}
    names = [t.name for t in cfg.tasks]
    record_pool_cells(run_dir, names, k - 1, answers, cfg.resolved_data_root(), cfg.eval.mode)


def _record_probe(
    cfg: RunConfig,
    k: int,
    merged: Path,
    model: tuple[Any, Any] | None,
    family: ModelFamily,
    eval_dir: Path,
    path: Path,
) -> None:
    """Likelihood ranking of candidate answers for the tasks that have candidates (the family's template)."""
    from sefe.coin.records import load_test
    from sefe.evaluation.probe import probe_items, run_probe
    from sefe.models.conversation import eval_question

    root = cfg.resolved_data_root()
    limit = cfg.eval.probe_max_samples or cfg.eval.max_samples
    items_of = {}
    for task in cfg.tasks[:k]:
        records = load_test(cfg.test_path(task), require=("text",))
        records = records[:limit] if limit else records
        questions = [eval_question(r.text or "", task.name) for r in records]
        items = probe_items(task.name, records, questions, seed=cfg.train.seed)
        if items:
            items_of[task.name] = items
    if not items_of:
        return
    if model is None:
        from sefe.models.llava import torch_dtype

        model = family.load(merged, dtype=torch_dtype(cfg.model.dtype))
    net, processor = model
    matrix = _side_matrix(path, cfg)
    out: dict[str, Any] = {}
    for i, task in enumerate(cfg.tasks[:k]):
        if task.name not in items_of:
            continue
        res = run_probe(
            net, processor, task.name, items_of[task.name], root, cfg.eval.probe_reduction, family=family
        )
        if res is not None:
            matrix.set(k - 1, i, res.rate, res.model_dump(mode="json"))
            out[task.name] = res.model_dump(mode="json")
    atomic_write_bytes(eval_dir / "probe.json", orjson.dumps(out, option=orjson.OPT_INDENT_2))
    matrix.save(path)
