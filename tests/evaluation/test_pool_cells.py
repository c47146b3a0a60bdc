"""The out-of-pool matrix and the from-pool shares of a CoIN-layout run, and what `sefe report` makes of them.

The root is hand-made in the CoIN layout (no `distractors.json`): pools are the gold answers of `test.json`,
and a box task has none.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from sefe.cli import app
from sefe.evaluation.answer_pools import normalise, read_pool
from sefe.evaluation.metrics import AccuracyMatrix
from sefe.evaluation.pool_cells import (
    FromPoolCells,
    later_from_pool,
    pool_cell,
    read_pool_cells,
    record_pool_cells,
    task_pools,
)
from sefe.evaluation.result_files import FROM_POOL_FILE, OUT_OF_POOL_FILE

REPO = Path(__file__).resolve().parents[2]
TASKS = ["ScienceQA", "VQAv2", "ImageNet", "Grounding"]
GOLD: dict[str, list[object]] = {
    "ScienceQA": ["A", "B", "B"],
    "VQAv2": ["two", ["yes", "Yes", "yeah"], "red"],  # a list: ten human answers, as VQA files may hold them
    "ImageNet": ["Umbrella", "Espresso maker"],
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "coin"
    for task, answers in GOLD.items():
        recs = [{"question_id": f"{task}{n}", "text": "q", "answer": a} for n, a in enumerate(answers)]
        (root / "annotations" / task).mkdir(parents=True)
        (root / "annotations" / task / "test.json").write_bytes(orjson.dumps(recs))
    boxes = [
        {"question_id": f"g{n}", "text": "q", "answer_bbox": box, "size": [64, 64]}
        for n, box in enumerate(["[0.1, 0.2, 0.3, 0.4]", "[0.5, 0.5, 0.9, 0.9]"])
    ]
    (root / "annotations" / "Grounding").mkdir(parents=True)
    (root / "annotations" / "Grounding" / "test.json").write_bytes(orjson.dumps(boxes))
    return root


def _record_run(run: Path, root: Path) -> None:
    """Four stages: letters, a VQA takeover by letters, VQA answered with ImageNet's classes, boxes."""
    stages: list[dict[str, list[str]]] = [
        {"ScienceQA": ["A", "B", "A", "C"]},
        {"ScienceQA": ["two", "A", "B", "B"], "VQAv2": ["two", "Yes.", "A", "blue"]},
        {"ScienceQA": ["A"] * 4, "VQAv2": ["umbrella", "Espresso maker.", "Umbrella", "UMBRELLA"]},
        {"ScienceQA": ["B"] * 2, "VQAv2": ["red"] * 2, "ImageNet": ["umbrella"], "Grounding": ["[0.1"]},
    ]
    for k, answers in enumerate(stages):
        record_pool_cells(run, TASKS, k, answers, root, "compat")


def test_pools_of_the_coin_formats(root: Path) -> None:
    assert read_pool(root, "VQAv2") == frozenset({"two", "yes", "yeah", "red"})  # list answers flattened
    assert read_pool(root, "ScienceQA") == frozenset({"a", "b"})
    assert read_pool(root, "Grounding") is None  # every gold box is another: no pool
    mini = REPO / "data" / "coin-mini"
    pools = task_pools(mini, [p.name for p in (mini / "annotations").iterdir()])
    assert "Grounding" not in pools and len(pools) == 7
    assert pools["ScienceQA"] <= frozenset("abcd") and normalise("Umbrella") in pools["ImageNet"]
    assert "unanswerable" in pools["VizWiz"] and all(pools.values())


def test_matrix_cells_and_a_vqa_task_answered_from_another_tasks_pool(root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _record_run(run, root)
    matrix, shares = read_pool_cells(run)
    assert matrix is not None and shares is not None
    assert matrix.tasks == TASKS and shares.tasks == TASKS
    # Grounding (a box task) has no pool: its cell stays empty and no from-pool entry is written
    assert matrix.rows == [[25.0], [25.0, 50.0], [0.0, 100.0], [0.0, 0.0, 0.0]]
    assert "3,3" not in shares.cells
    assert shares.cells["0,0"] == {"VQAv2": 0.0, "ImageNet": 0.0}
    assert shares.cells["1,0"] == {"VQAv2": 25.0, "ImageNet": 0.0}  # `two` answered to a letter question
    assert shares.cells["1,1"] == {"ScienceQA": 25.0, "ImageNet": 0.0}  # the letter takeover
    assert shares.cells["2,1"] == {"ScienceQA": 0.0, "ImageNet": 100.0}  # every answer is ImageNet's
    later = later_from_pool(shares.cells, TASKS)
    assert later[1] == [0.0, None, 50.0, None]  # VQAv2 after stages 3 and 4: (100 + 0) / 2 from ImageNet


def test_a_stage_evaluated_again_rewrites_its_cells(root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _record_run(run, root)
    record_pool_cells(run, TASKS, 2, {"ScienceQA": ["B"], "VQAv2": ["red", "blue"]}, root, "compat")
    matrix, shares = read_pool_cells(run)
    assert matrix is not None and shares is not None
    assert matrix.rows[2] == [0.0, 50.0] and shares.cells["2,1"] == {"ScienceQA": 0.0, "ImageNet": 0.0}
    assert matrix.rows[1] == [25.0, 50.0]  # the other rows stay


def test_pool_cell_without_a_pool_or_answers(root: Path) -> None:
    pools = task_pools(root, TASKS)
    assert pool_cell(["[0.1, 0.2, 0.3, 0.4]"], "Grounding", pools) == (None, None)
    assert pool_cell([], "VQAv2", pools) == (None, {})


def test_a_broken_from_pool_file_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / FROM_POOL_FILE).write_text('{"tasks": ["A"], "cells": {"0,0": {"B": "many"}}}')
    result = CliRunner().invoke(app, ["report", str(_accuracy_run(tmp_path)), "--no-plots"])
    assert result.exit_code == 2 and FROM_POOL_FILE in result.output and "Traceback" not in result.output


def _accuracy_run(run: Path) -> Path:
    m = AccuracyMatrix(tasks=TASKS)
    for k in range(2):
        for i in range(k + 1):
            m.set(k, i, 50.0)
    m.save(run / "accuracy.json")
    return run


def test_report_shows_the_pool_tables_of_runs_that_have_them(root: Path, tmp_path: Path) -> None:
    old = _accuracy_run(tmp_path / "old")
    new = _accuracy_run(tmp_path / "new")
    _record_run(new, root)
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(old), str(new), "--out", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    old_part, new_part = md.split("## Run `old`")[1].split("## Run `new`")
    for word in ("Out of pool", "another task's pool", "pool_old.png"):  # a run written before the files
        assert word not in old_part  # existed: not a word about them
    assert "Out of pool" in new_part and "| 3: ImageNet | 0.00 | 100.00 | – |  |" in new_part
    assert "Answered from another task's pool" in new_part
    assert "| VQAv2 | 0.00 | – | 50.00 | – |" in new_part
    assert (out / "pool_new.png").stat().st_size > 1000 and not (out / "pool_old.png").exists()
    data = orjson.loads((out / "report.json").read_bytes())
    assert data["runs"][0]["out_of_pool"] is None and data["runs"][0]["from_pool"] is None
    assert FromPoolCells.model_validate(data["runs"][1]["from_pool"]).cells["2,1"]["ImageNet"] == 100.0
    assert (new / OUT_OF_POOL_FILE).is_file()
