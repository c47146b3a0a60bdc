"""The warm start's vision stage: its targets come from the scene truth, and the tower it trains sees."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from sefe.micro.scenes import COLOURS, GRID, SHAPES, WORDS
from sefe.micro.vision_pretrain import LETTERS, VisionPretrainOptions, pretrain_vision, scene_targets


def test_targets_put_each_object_in_its_grid_cell() -> None:
    scene = {
        "objects": [
            {"shape": "star", "colour": "blue", "cell": [0, 1], "box": [0.38, 0.08, 0.6, 0.31]},
            {"shape": "circle", "colour": "red", "cell": [2, 2], "box": [0.7, 0.7, 0.95, 0.96]},
        ],
        "word": None,
        "word_colour": None,
    }
    t = scene_targets(scene)
    assert t["count"] == 2 and t["word"] == 0 and t["word_colour"] == 0
    assert t["colour"][1] == 1 + list(COLOURS).index("blue") and t["shape"][1] == 1 + SHAPES.index("star")
    assert t["colour"][8] == 1 + list(COLOURS).index("red")
    assert [j for j, m in enumerate(t["mask"]) if m] == [1, 8]
    assert sum(t["colour"]) == t["colour"][1] + t["colour"][8]  # empty cells are class 0
    # the box is given inside its cell, 0..1 (x1 = 0.38 * 3 - column 1)
    assert t["box"][1] == pytest.approx([0.14, 0.24, 0.8, 0.93])
    assert t["letter"] == [0] * GRID * GRID


def test_word_letters_sit_in_the_middle_row() -> None:
    t = scene_targets({"objects": [], "word": "CAT", "word_colour": "green"})
    assert t["word"] == 1 + WORDS.index("CAT") and t["count"] == 0
    assert t["letter"][GRID : 2 * GRID] == [1 + LETTERS.index(c) for c in "CAT"]
    assert t["letter"][:GRID] == [0] * GRID and t["letter"][2 * GRID :] == [0] * GRID


@pytest.mark.slow  # builds a small benchmark and trains the tiny tower for a few hundred steps (~15 s)
def test_pretrained_tower_tells_colours_apart(tmp_path: Path) -> None:
    """Held-out accuracy measured on pictures the tower never trained on: far above chance (1/6)."""
    import torch

    from sefe.micro.generate import build_micro
    from sefe.micro.warmstart import micro_model_config
    from sefe.models.tiny import build_tiny_llava

    torch.manual_seed(0)
    root = build_micro(tmp_path / "m", n_train=2, n_test=2, n_warm=400, tasks=["Colour"])
    model, processor = build_tiny_llava(micro_model_config())
    opts = VisionPretrainOptions(steps=300, held_out=0.25)
    info = pretrain_vision(model, processor, root, opts, seed=0, console=Console(quiet=True))
    assert info["pictures"] == 400 and info["steps"] == 300
    assert info["held_out"]["colour_per_object"] > 0.7
    assert info["held_out"]["count"] > 0.5  # five classes (0-4 shapes)


def test_grid_mismatch_is_refused(tmp_path: Path) -> None:
    from sefe.micro.warmstart import micro_model_config
    from sefe.models.tiny import build_tiny_llava

    model, processor = build_tiny_llava(micro_model_config().model_copy(update={"patch_size": 12}))
    with pytest.raises(ValueError, match="one patch per grid cell"):
        pretrain_vision(model, processor, tmp_path, VisionPretrainOptions(), 0, Console(quiet=True))
