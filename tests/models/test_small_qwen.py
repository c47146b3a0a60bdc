"""The small Qwen2.5-VL of Micro-CoIN's warm start: one image token per grid cell, a small vocabulary that
shares the micro BPE's pieces, and the family's data path (boxes in Qwen's pixels where an answer has one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from PIL import Image

from sefe.errors import InputError
from sefe.models.family import get_family
from sefe.models.family_dataset import FamilyDataset
from sefe.models.family_types import SmallSizes
from sefe.models.qwen2_5_vl import image_token_count
from sefe.models.small import SmallBuilder, small_builder
from sefe.models.small_qwen import CHATML_TOKENS, mrope_section

SIZES = SmallSizes(extra_corpus=("red green blue circle square star",))
CELL_COLOURS = [(30 * k, 255 - 25 * k, (70 * k) % 256) for k in range(9)]


@pytest.fixture(scope="module")
def small() -> tuple[SmallBuilder, Any, Any]:
    builder = small_builder("qwen2_5_vl")
    model, processor = builder.build(builder.config(SIZES))
    return builder, model, processor


def _cells_picture() -> Image.Image:
    """48 px, each 16 px grid cell (row-major) filled with its own colour."""
    img = Image.new("RGB", (48, 48))
    for k, colour in enumerate(CELL_COLOURS):
        r, c = divmod(k, 3)
        img.paste(colour, (16 * c, 16 * r, 16 * c + 16, 16 * r + 16))
    return img


def test_a_48_px_picture_is_nine_image_tokens_one_per_grid_cell(small: tuple[SmallBuilder, Any, Any]) -> None:
    builder, model, processor = small
    ip = processor.image_processor
    assert (ip.patch_size, ip.merge_size) == (8, 2)
    assert image_token_count((48, 48), ip) == 9  # not resized: 6x6 patches, merged 2x2
    pic = _cells_picture()
    enc = get_family("qwen2_5_vl").encode(processor, [("<image>\nWhat colour?", "red")], pic, 512)
    assert enc.input_ids.count(processor.image_token_id) == 9
    assert enc.vision["image_grid_thw"].tolist() == [[1, 6, 6]]
    # merged token k reads grid cell k: its four patches' red channel is cell k's red, normalised
    rows = enc.vision["pixel_values"].view(9, 4, 3, 2 * 8 * 8)
    mean, std = ip.image_mean[0], ip.image_std[0]
    for k, (red, _, _) in enumerate(CELL_COLOURS):
        assert torch.allclose(rows[k, :, 0], torch.tensor((red / 255 - mean) / std), atol=1e-5)
    features = builder.cell_features(model, builder.vision_inputs(processor, [pic, pic]))
    assert features.shape == (2, 9, builder.cell_width(model)) == (2, 9, 128)


def test_vocabulary_is_the_micro_bpe_with_chatml_appended(small: tuple[SmallBuilder, Any, Any]) -> None:
    from sefe.models.small_llava import SMALL as LLAVA
    from sefe.models.tiny import build_tokenizer

    _, model, processor = small
    tok = processor.tokenizer
    plain = build_tokenizer(LLAVA.config(SIZES))
    assert len(tok) == len(plain) + len(CHATML_TOKENS) < 1100  # not Qwen's 151k: the LM head stays small
    assert [tok.convert_tokens_to_ids(t) for t in CHATML_TOKENS] == list(range(len(plain), len(tok)))
    assert model.config.text_config.vocab_size == len(tok)
    # the same pieces as LLaVA's micro tokenizer, and an answer after ChatML's newline reads as after a space
    assert tok.encode(" red circle", add_special_tokens=False) == plain.encode(
        " red circle", add_special_tokens=False
    )
    pieces = tok.convert_ids_to_tokens(tok.encode("assistant\nred<|im_end|>\n", add_special_tokens=False))
    assert pieces[-3:] == ["▁red", "<|im_end|>", "\n"]
    assert (
        mrope_section(32) == [4, 6, 6]
        and sum(model.config.text_config.rope_parameters["mrope_section"]) == 16
    )


def test_families_without_a_small_model_are_named(small: tuple[SmallBuilder, Any, Any]) -> None:
    assert isinstance(small[0], SmallBuilder) and small[0].name == "qwen2_5_vl"
    with pytest.raises(InputError, match=r"'internvl' \(families with one: llava, qwen2_5_vl\)"):
        small_builder("internvl")
    with pytest.raises(ValueError, match="2x2"):
        small[0].config(SIZES.model_copy(update={"cell_px": 15}))


def test_a_corpus_mixing_boxes_and_other_answers(
    small: tuple[SmallBuilder, Any, Any], tmp_path: Path
) -> None:
    """`box_optional`: a box answer becomes Qwen's pixels, an answer without one is kept (ASD's letters)."""
    _, _, processor = small
    family = get_family("qwen2_5_vl")
    _cells_picture().save(tmp_path / "p.png")
    convs = [("Give its bounding box.", "[0.06, 0.40, 0.29, 0.62]"), ("Which option? A. [...]", "A")]
    turns = [[{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}] for q, a in convs]
    records = [{"id": i, "image": "p.png", "conversations": c} for i, c in enumerate(turns)]
    path = tmp_path / "train.json"
    path.write_bytes(orjson.dumps(records))
    with pytest.raises(InputError, match=r"record 1, id 1, turn 0: Grounding answer 'A' has no"):
        FamilyDataset(path, tmp_path, family, processor, box_answers=True)[1]
    mixed = FamilyDataset(path, tmp_path, family, processor, box_answers=True, box_optional=True)
    learned = [
        processor.tokenizer.decode([t for t in mixed[i]["labels"] if t != -100], skip_special_tokens=True)
        for i in range(2)
    ]
    assert learned == ["[3, 19, 14, 30]", "A"]  # 0.06 x 48 = 2.9 -> 3 ...
