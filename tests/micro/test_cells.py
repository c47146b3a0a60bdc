"""Per-cell answer statistics read from a run folder's prediction files."""

from __future__ import annotations

from pathlib import Path

import orjson

from sefe.micro.cells import cell_matrix, cell_stats, later_from_pool, top_share


def _write(run: Path, stage: str, task: str, answers: list[str]) -> None:
    folder = run / stage / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps({"question_id": f"q{j}", "text": a}) for j, a in enumerate(answers)]
    (folder / f"{task}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def test_top_share_counts_case_and_final_period_as_the_same_answer() -> None:
    assert top_share(["Yes", "yes.", " YES", "No"]) == 75.0
    assert top_share(["red", "blue", "green", "red"]) == 50.0
    assert top_share([]) is None


def test_cell_matrix_shows_a_collapse_to_one_constant(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run, "1_Colour", "Colour", ["red", "blue", "green", "red"])
    _write(run, "2_Shape", "Colour", ["triangle"] * 4)  # the demo's collapse: every item one answer
    _write(run, "2_Shape", "Shape", ["star", "circle", "star", "square"])
    rows = cell_matrix(run, ["Colour", "Shape", "Word"])
    assert rows == [[50.0], [100.0, 50.0]]  # stage 3 never ran: no row


def test_cell_stats_out_of_pool_and_answers_from_later_tasks_pools(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for task, answers in (("Colour", ["red", "blue"]), ("Shape", ["triangle", "star"]), ("Word", ["box"])):
        folder = root / "annotations" / task
        folder.mkdir(parents=True)
        (folder / "distractors.json").write_bytes(orjson.dumps({"task": task, "answers": answers}))
    run = tmp_path / "run"
    tasks = ["Colour", "Shape", "Word"]
    _write(run, "1_Colour", "Colour", ["red", "blue", "red", "blue"])
    _write(run, "2_Shape", "Colour", ["triangle", "triangle", "triangle", "red"])
    _write(run, "2_Shape", "Shape", ["star"] * 4)
    _write(run, "3_Word", "Colour", ["box", "box", "[0.3", "[0.3"])
    _write(run, "3_Word", "Shape", ["box"] * 4)
    _write(run, "3_Word", "Word", ["box"] * 4)
    stats = cell_stats(run, tasks, root)
    assert stats["out_of_pool"] == [[0.0], [75.0, 0.0], [100.0, 100.0, 0.0]]
    assert stats["from_pool"]["1,0"] == {"Shape": 75.0, "Word": 0.0}
    assert stats["from_pool"]["2,0"] == {"Shape": 0.0, "Word": 50.0}
    later = later_from_pool(stats["from_pool"], tasks)
    # Colour asked after Shape and after Word: 75 % then 0 % Shape words, 0 % then 50 % Word words
    assert later[0] == [None, 37.5, 25.0]
    assert later[1] == [0.0, None, 100.0] and later[2] == [None, None, None]


def test_line_accuracy_splits_trained_and_held_out_items_by_question_id(tmp_path: Path) -> None:
    from sefe.micro.cells import line_accuracy

    root = tmp_path / "data"
    for task, recs in (
        ("Colour", [("c0", "red", "trained"), ("c1", "blue", "held-out"), ("c2", "red", "held-out")]),
        ("Locate", [("l0", None, "trained"), ("l1", None, "held-out")]),
    ):
        folder = root / "annotations" / task
        folder.mkdir(parents=True)
        test = []
        for qid, answer, line in recs:
            rec = {"question_id": qid, "text": "q", "instruction": line}
            rec.update({"answer": answer} if answer else {"answer_bbox": "[0.04, 0.04, 0.29, 0.29]"})
            test.append(rec)
        (folder / "test.json").write_bytes(orjson.dumps(test))
    run = tmp_path / "run"
    folder = run / "2_Locate" / "eval"
    folder.mkdir(parents=True)
    lines = [{"question_id": q, "text": t} for q, t in (("c2", "Red."), ("c0", "red"), ("c1", "green"))]
    (folder / "Colour.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in lines))
    boxes = [
        {"question_id": "l1", "text": "[0.9]"},
        {"question_id": "l0", "text": "[0.05, 0.04, 0.29, 0.30]"},
    ]
    (folder / "Locate.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in boxes))
    tasks = ["Colour", "Locate"]
    assert line_accuracy(run, tasks, root, 1, 0) == {"trained": 100.0, "held-out": 50.0}
    assert line_accuracy(run, tasks, root, 1, 1) == {"trained": 100.0, "held-out": 0.0}  # IoU >= 0.5
    assert line_accuracy(run, tasks, root, 0, 0) is None  # stage 1 never ran


def test_cell_stats_reads_the_pool_cells_the_run_recorded(tmp_path: Path) -> None:
    from sefe.evaluation.metrics import AccuracyMatrix
    from sefe.evaluation.pool_cells import record_pool_cells

    root = tmp_path / "data"
    for task, answers in (("Colour", ["red", "blue"]), ("Shape", ["triangle", "star"])):
        folder = root / "annotations" / task
        folder.mkdir(parents=True)
        (folder / "distractors.json").write_bytes(orjson.dumps({"task": task, "answers": answers}))
    run, tasks = tmp_path / "run", ["Colour", "Shape"]
    stages = [{"Colour": ["red", "blue"]}, {"Colour": ["triangle", "red"], "Shape": ["star", "dunno"]}]
    for k, answers in enumerate(stages):
        for task, texts in answers.items():
            _write(run, f"{k + 1}_{tasks[k]}", task, texts)
    computed = cell_stats(run, tasks, root)
    for k, answers in enumerate(stages):  # what `sefe train` records after each stage
        record_pool_cells(run, tasks, k, answers, root, "fixed")
    assert cell_stats(run, tasks, root) == computed  # the same function: the same numbers
    assert computed["out_of_pool"] == [[0.0], [50.0, 50.0]]
    oop = AccuracyMatrix.load(run / "out_of_pool.json")
    oop.set(1, 0, 12.0)  # a recorded cell is read, not recomputed
    oop.save(run / "out_of_pool.json")
    assert cell_stats(run, tasks, root)["out_of_pool"] == [[0.0], [12.0, 50.0]]
