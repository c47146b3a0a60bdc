"""After a stage, `sefe train` records its answers against the pools: `out_of_pool.json`, `from_pool.json`."""

from __future__ import annotations

from pathlib import Path

import orjson

from sefe.coin.layout import evaluation_file
from sefe.evaluation.pool_cells import read_pool_cells
from sefe.sefe_train.config import RunConfig
from sefe.sefe_train.evaluate_stage import record_pool_rows


def _answer(folder: Path, task: str, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.jsonl"
    path.write_bytes(
        b"".join(orjson.dumps({"question_id": n, "text": t}) + b"\n" for n, t in enumerate(texts))
    )
    return path


def test_stage_rows_on_coin_mini_with_a_box_task(tmp_path: Path) -> None:
    cfg = RunConfig(tasks=["ImageNet", "Grounding", "VQAv2"], output_dir=str(tmp_path / "run"))
    run = Path(cfg.output_dir)
    gold = [
        r["answer"] for r in orjson.loads(evaluation_file(cfg.resolved_data_root(), "ImageNet").read_bytes())
    ]
    stage1 = {"ImageNet": _answer(run / "1_ImageNet.partial" / "eval", "ImageNet", gold)}
    record_pool_rows(cfg, 1, stage1, run)
    stage2 = tmp_path / "run" / "2_Grounding.partial" / "eval"
    preds = {"ImageNet": _answer(stage2, "ImageNet", ["[0.1, 0.2, 0.3, 0.4]", gold[0]]),
             "Grounding": _answer(stage2, "Grounding", ["[0.1, 0.2, 0.3, 0.4]"])}  # fmt: skip
    record_pool_rows(cfg, 2, preds, run)
    matrix, shares = read_pool_cells(run)
    assert matrix is not None and shares is not None and matrix.tasks == [t.name for t in cfg.tasks]
    assert matrix.rows == [[0.0], [50.0]]  # gold answers are in the pool; Grounding has none (boxes)
    assert set(shares.cells) == {"0,0", "1,0"} and set(shares.cells["1,0"]) == {"VQAv2"}
