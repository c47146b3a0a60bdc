"""Per-cell answer statistics read from a run folder's prediction files."""

from __future__ import annotations

from pathlib import Path

import orjson

from sefe.micro.cells import cell_matrix, top_share


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
