from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.coin.root_tasks import RootTaskError, root_tasks
from sefe.coin.tasks import TaskError, coin_tasks, get_task, load_task_file

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


def test_the_yaml_task_of_the_test_before_is_gone() -> None:
    """tests/conftest.py puts the task registry back after each test (this one runs after the YAML one)."""
    with pytest.raises(TaskError, match="unknown task 'ChartQA'"):
        get_task("ChartQA")


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
        root_tasks(tmp_path)
    p.write_text("name: v1.2_chart-qa\n")
    assert load_task_file(p).name == "v1.2_chart-qa"  # dots inside a name stay allowed


def test_each_coin_task_names_its_scorer_and_answer_style() -> None:
    from sefe.coin.tasks import COIN_TASK_NAMES, SCORER_NAMES

    assert SCORER_NAMES == COIN_TASK_NAMES  # one scorer per CoIN task, in training order
    assert all(t.scorer == t.name for t in coin_tasks())
    styles = {t.name: t.style for t in coin_tasks()}
    assert styles.pop("ScienceQA") == "letter" and styles.pop("Grounding") == "box"
    assert set(styles.values()) == {"short"}
    assert get_task("textvqa") is get_task("TextVQA")


def test_a_declared_task_cannot_take_another_scorer_for_a_coin_name() -> None:
    from pydantic import ValidationError

    from sefe.coin.tasks import TaskSpec

    assert TaskSpec(name="Colour", scorer="vqav2").scorer == "VQAv2"
    assert TaskSpec(name="ChartQA").scorer is None
    with pytest.raises(ValidationError, match="scored by the GQA scorer"):
        TaskSpec(name="gqa", scorer="VQAv2")
