"""The scene ASD backend through the normal `sefe asd build` path: explanations from the truth, in seconds."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sefe.asd_gen.backends.base import ChatRequest
from sefe.asd_gen.backends.factory import make_backend
from sefe.asd_gen.backends.scene_backend import SceneError, explanation, scene_for
from sefe.asd_gen.build import BuildOptions, build
from sefe.asd_gen.needs import GenerationOptions
from sefe.micro.generate import build_micro


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_micro(tmp_path_factory.mktemp("micro") / "root", seed=1, n_train=30, n_test=2, n_warm=2)


def test_asd_build_with_scene_backend_and_data_distractors(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "asd"
    tasks = ["Colour", "Side", "Count", "Locate"]
    result = build(
        BuildOptions(
            data_root=root,
            out=out,
            tasks=tasks,
            xs=[40.0],
            distractors="pool",
            generation=GenerationOptions(backend="scene"),
        )
    )
    scenes = orjson.loads((root / "scenes.json").read_bytes())
    assert result.status != "pending"
    colours = ("red", "green", "blue", "yellow", "purple", "orange")
    shapes = ("circle", "square", "triangle", "diamond", "star")
    explained = 0
    for task in tasks:
        recs = orjson.loads((out / "annotations" / task / "train_x40.json").read_bytes())
        assert len(recs) == 30
        for rec in recs:
            q, a = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
            if "explain" in q.split("\n")[-1].lower() or "describe the region" in q.lower():
                explained += 1
                obj = scenes[rec["image"]]["objects"][0]  # Colour, Side, Locate: the only object
                said = a.lower()
                # the explanation states the asked fact only: no other task's fact rides along (no replay)
                if task == "Colour":
                    assert obj["colour"] in said and not any(sh in said for sh in shapes), a
                if task == "Side":
                    assert "left side" in said and not any(c in said for c in colours), a
                    assert not any(sh in said for sh in shapes), a
                if task == "Count":
                    assert not any(c in said for c in colours) and not any(sh in said for sh in shapes), a
    assert explained >= 4  # brief + detail shares of 40 % of 4 x 30 records


def test_explanations_state_only_the_asked_fact_and_detail_is_longer(root: Path) -> None:
    scene = {
        "objects": [
            {"shape": "star", "colour": "red", "cell": [0, 0]},
            {"shape": "square", "colour": "blue", "cell": [1, 1]},
        ]
    }
    brief = explanation(scene, "What colour is the square?", detail=False)
    assert "blue" in brief and "centre" not in brief and "red" not in brief and "2" not in brief
    detail = explanation(scene, "What colour is the square?", detail=True)
    assert len(detail.split()) > len(brief.split()) and "star" not in detail and "centre" not in detail
    count = explanation(scene, "How many shapes are in the image?", detail=True)
    assert "2 shapes" in count and not any(w in count for w in ("red", "blue", "star", "square", "centre"))
    side = explanation({"objects": [scene["objects"][0]]}, "Is the object on the left side?", detail=False)
    assert side == "The object is on the left side of the picture."
    top = explanation(scene, "Is the blue square on the top side?", detail=False)  # the hard track's sides
    assert top == "The blue square is not on the top side of the picture."
    place = explanation(scene, "the blue square.", detail=False)
    assert "centre" in place and "red" not in place
    word = explanation({"word": "SUN", "word_colour": "red"}, "What word?", detail=False)
    assert '"SUN"' in word and "red" not in word


def test_scene_lookup_and_clear_errors(root: Path, tmp_path: Path) -> None:
    img = next((root / "images" / "Colour" / "train").glob("*.png"))
    assert "objects" in scene_for(str(img))
    stray = tmp_path / "x.png"
    stray.write_bytes(img.read_bytes())
    with pytest.raises(SceneError, match=r"no scenes\.json"):
        scene_for(str(stray))
    backend = make_backend(GenerationOptions(backend="scene"))
    results = []
    req = ChatRequest(
        key="k",
        messages=[{"role": "user", "content": "Question: What colour?\nCorrect answer: red"}],
        json_schema={"type": "object", "properties": {"distractor": {"type": "string"}}},
        schema_name="sefe_native_yn_1",
        image_path=str(img),
    )
    backend.run([req], results.append)
    assert results[0].error is not None and "--distractors pool" in results[0].error
