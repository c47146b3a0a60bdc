"""Evaluation after stage k of `sefe train`: tasks 1..k on the merged model -> row k of `accuracy.json`.

Why here and not in the runner: it only glues the inference and scoring owners' APIs to the run layout.
Predictions go to `<k>_<Task>.partial/eval/<Task>.jsonl` (appended and flushed by `run_inference`, so a kill
during evaluation resumes with the questions still unanswered); scores to `eval/scores.json`, and the matrix
cell (k, i) to `<run>/accuracy.json` (atomic rewrite).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from sefe.sefe_train.config import RunConfig
from sefe.sefe_train.run_layout import atomic_write_bytes


def _limited_test_file(test: Path, limit: int | None, out_dir: Path, task: str) -> Path:
    """With `eval.max_samples`, score against the same first N records inference answered."""
    if limit is None:
        return test
    records = orjson.loads(test.read_bytes())
    if not isinstance(records, list):
        raise ValueError(f"{test}: a CoIN test file must be a JSON array of records")
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
    from sefe.sefe_train.evaluation.inference import run_inference
    from sefe.sefe_train.evaluation.metrics import AccuracyMatrix
    from sefe.sefe_train.evaluation.scorers import default_gt, score_predictions

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
    )
    all_names = [t.name for t in cfg.tasks]
    if accuracy_path.exists():
        matrix = AccuracyMatrix.load(accuracy_path)
        if matrix.tasks != all_names and all_names[: len(matrix.tasks)] == matrix.tasks:  # tasks appended
            matrix = AccuracyMatrix(
                tasks=all_names, mode=matrix.mode, rows=matrix.rows, details=matrix.details
            )
        if matrix.tasks != all_names or matrix.mode != cfg.eval.mode:
            raise ValueError(
                f"{accuracy_path}: holds tasks {matrix.tasks} in {matrix.mode!r} mode, but this run has "
                f"{all_names} in {cfg.eval.mode!r} mode"
            )
    else:
        matrix = AccuracyMatrix(tasks=all_names, mode=cfg.eval.mode)
    scores: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        test = _limited_test_file(cfg.test_path(task), cfg.eval.max_samples, eval_dir, task.name)
        gt = cfg.gt_path(task) or default_gt(root, task.name)
        result = score_predictions(task.name, preds[task.name], test, gt=gt, mode=cfg.eval.mode)
        matrix.record(k - 1, i, result)
        scores[task.name] = result.model_dump(mode="json")
    atomic_write_bytes(eval_dir / "scores.json", orjson.dumps(scores, option=orjson.OPT_INDENT_2))
    matrix.save(accuracy_path)
    return {name: float(s["accuracy"]) for name, s in scores.items()}
