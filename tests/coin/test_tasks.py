from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.coin.tasks import TaskError, coin_tasks, get_task, load_task_file
from sefe.root_tasks import RootTaskError, register_root

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "tasks" / "example.yaml"


def test_coin_order_and_original_styles() -> None:
    tasks = coin_tasks()
    assert [t.name for t in tasks] == [
        "ScienceQA",
        "TextVQA",
        "ImageNet",
        "GQA",
        "VizWiz",
        "Grounding",
        "VQAv2",
        "OCRVQA",
    ]
    assert {t.name for t in tasks if t.original_style == "mcq"} == {"ScienceQA"}
    for t in tasks:
        assert len(t.target_styles) == 4 and t.original_style not in t.target_styles


def test_productions() -> None:
    assert get_task("ImageNet").production("mcq") == "data"
    assert get_task("GQA").production("mcq") == "model"
    assert get_task("GQA").production("mcq", "pool") == "data"
    assert get_task("ScienceQA").production("short") == "rule"
    assert get_task("Grounding").production("brief", "pool") == "model"
    assert get_task("ScienceQA").production("mcq") == "original"


def test_example_yaml_registers_a_task() -> None:
    spec = load_task_file(EXAMPLE)
    assert spec.name == "ChartQA" and get_task("ChartQA") == spec
    assert spec.candidates == "model" and "Context:" in spec.context_prefixes


def test_bad_yaml_names_file_and_field(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("name: X\noriginal_style: essay\n")
    with pytest.raises(TaskError, match=r"t\.yaml.*original_style"):
        load_task_file(p)
    p.write_text("name: X\nanswer: box\n")
    with pytest.raises(TaskError, match="boxes"):
        load_task_file(p)
    p.write_text("- a list\n")
    with pytest.raises(TaskError, match="mapping"):
        load_task_file(p)
    with pytest.raises(TaskError, match="unknown task 'Nope'"):
        get_task("Nope")


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_task_names_are_names_never_paths(tmp_path: Path, name: str) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(f"name: '{name}'\n")
    with pytest.raises(TaskError, match=r"t\.yaml.*name.*is a path, not a name"):
        load_task_file(p)
    task = {"name": name, "style": "short", "scorer": "VQAv2", "asd": {"name": "Ok"}}
    (tmp_path / "tasks.json").write_bytes(orjson.dumps({"tasks": [task]}))
    with pytest.raises(RootTaskError, match=r"tasks\.json: field 'tasks\.0\.name'.*is a path"):
        register_root(tmp_path)
    p.write_text("name: v1.2_chart-qa\n")
    assert load_task_file(p).name == "v1.2_chart-qa"  # dots inside a name stay allowed
