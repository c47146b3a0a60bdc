"""A data root's own tasks (`tasks.json`): found by lookup with the root, never registered process-wide."""

from __future__ import annotations

from pathlib import Path

import pytest

from sefe.coin.root_tasks import RootTaskError, find_task, root_tasks
from sefe.coin.tasks import TaskError, get_task
from tests.helpers.root_tasks import declare

COLOUR = {
    "name": "Colour",
    "style": "short",
    "scorer": "vqav2",
    "asd": {"name": "Colour", "candidates": "classes"},
}
COUNT = {
    "name": "Count",
    "style": "letter",
    "scorer": "ScienceQA",
    "asd": {"original_style": "mcq", "answer": "option", "candidates": "options"},
}


def test_a_root_yields_its_task_specs_with_scorer_and_style(tmp_path: Path) -> None:
    root = declare(tmp_path, COLOUR, COUNT)
    colour, count = root_tasks(root)
    assert (colour.name, colour.scorer, colour.style, colour.candidates) == (
        "Colour",
        "VQAv2",
        "short",
        "classes",
    )
    assert (count.scorer, count.style, count.answer) == ("ScienceQA", "letter", "option")
    assert find_task("colour", root) is colour  # any case
    assert find_task("TextVQA", root) is get_task("TextVQA")  # CoIN's tasks stay visible


def test_nothing_is_known_without_the_root(tmp_path: Path) -> None:
    declare(tmp_path, COLOUR)
    assert root_tasks(None) == () and root_tasks(tmp_path / "elsewhere") == ()
    with pytest.raises(TaskError, match="unknown task 'Colour'"):
        find_task("Colour")
    with pytest.raises(TaskError, match=r"tasks\.json declares: Colour"):
        find_task("Shape", tmp_path)


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    root = declare(tmp_path, COLOUR)
    assert [t.name for t in root_tasks(root)] == ["Colour"]
    declare(tmp_path, COLOUR, COUNT)  # another size: another cache key
    assert [t.name for t in root_tasks(root)] == ["Colour", "Count"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**COLOUR, "scorer": "BLEU"}, r"tasks\[0\] \(Colour\): field 'scorer'"),
        ({**COLOUR, "style": "poem"}, r"tasks\[0\] \(Colour\): field 'style'"),
        ({**COLOUR, "asd": {"candidates": "crystal ball"}}, r"tasks\[0\] \(Colour\): field 'asd.candidates'"),
        ({**COLOUR, "asd": {"name": "Shape"}}, r"field 'asd.name' 'Shape' differs"),
        ({**COLOUR, "name": "TextVQA", "asd": {}}, "is a CoIN task: it is scored by the TextVQA scorer"),
        (
            {"name": "Colour", "style": "short", "asd": {}, "drop": "scorer"},
            r"field 'tasks.0.scorer': Field required",
        ),
    ],
)
def test_a_bad_declaration_names_file_task_and_field(
    tmp_path: Path, entry: dict[str, object], message: str
) -> None:
    if "drop" in entry:  # a required field left out
        (tmp_path / "tasks.json").write_text('{"tasks": [{"name": "Colour", "style": "short", "asd": {}}]}')
    root = tmp_path if "drop" in entry else declare(tmp_path, entry)
    with pytest.raises(RootTaskError, match=message) as info:
        root_tasks(root)
    assert str(info.value).startswith(str((tmp_path / "tasks.json").resolve()))


def test_broken_json_and_duplicates_are_errors(tmp_path: Path) -> None:
    (tmp_path / "tasks.json").write_text("{")
    with pytest.raises(RootTaskError, match="broken JSON"):
        root_tasks(tmp_path)
    declare(tmp_path, COLOUR, {**COLOUR, "name": "colour", "asd": {}})
    with pytest.raises(RootTaskError, match=r"tasks\[1\] \(colour\): the task is declared twice"):
        root_tasks(tmp_path)
