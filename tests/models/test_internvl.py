"""The InternVL family (HF-native InternVLForConditionalGeneration) on a tiny model with the real vocabulary.

What InternVL shares with Qwen2.5-VL (ChatML rendering, labels, collator) is tested there; here: tiles, the
`<img>` ... `</img>` slot, 1-D positions (no `mm_token_type_ids`), 0..1000 boxes and the family end to end.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sefe.models import internvl, vocab
from sefe.models.family import family_for_folder, get_family
from tests.helpers.qwen import label_runs, noise_image, require_qwen_vocab

FAMILY = get_family("internvl")
TURNS = [("<image>\nWhat is the object in the image?", "Espresso maker"), ("Its colour?", "Red")]


@pytest.fixture(scope="module")
def tiny_intern(tmp_path_factory: pytest.TempPathFactory):
    require_qwen_vocab(vocab.vocab_dir())
    folder = FAMILY.tiny_dir(tmp_path_factory.mktemp("sefe-cache"))
    assert family_for_folder(folder) is FAMILY
    return FAMILY.load(folder)


def test_added_tokens_at_internvl3_ids(tiny_intern) -> None:
    model, proc = tiny_intern
    tok = proc.tokenizer
    assert tok.convert_tokens_to_ids(["<img>", "</img>", "<IMG_CONTEXT>"]) == [151665, 151666, 151667]
    assert proc.image_token_id == model.config.image_token_id == 151667
    assert tok.convert_tokens_to_ids("<video>") == 151674 and len(tok) == 151675


def test_saved_tokenizer_names_its_image_tokens_and_keeps_given_names(tmp_path: Path) -> None:
    config = tmp_path / "tokenizer_config.json"
    config.write_text('{"tokenizer_class": "Qwen2Tokenizer", "extra_special_tokens": ["<img>"]}')
    internvl.name_image_tokens(config)
    written = json.loads(config.read_text())
    assert {k: written[k] for k in internvl.NAMED_TOKENS} == internvl.NAMED_TOKENS
    assert written["extra_special_tokens"] == ["<img>"]
    released = {"extra_special_tokens": {"video_token": "<|video_pad|>"}, "end_image_token": "</IMG>"}
    config.write_text(json.dumps(released))
    internvl.name_image_tokens(config)
    written = json.loads(config.read_text())
    assert (
        written["extra_special_tokens"] == released["extra_special_tokens"] and "video_token" not in written
    )
    assert written["end_image_token"] == "</IMG>" and written["start_image_token"] == "<img>"


def test_tiles_decide_the_token_count(tiny_intern) -> None:
    model, proc = tiny_intern
    # 56-px tiles, 4 tokens each, up to 4 tiles + a thumbnail when there is more than one:
    # 56x56 -> 1 tile; 200x100 -> 2x1 + thumbnail; 640x480 -> 2x2 + thumbnail
    tiles = {(56, 56): 1, (200, 100): 3, (640, 480): 5}
    items = []
    for (w, h), n in tiles.items():
        enc = FAMILY.encode(proc, TURNS, noise_image(w, h), 4096)
        assert enc.vision["pixel_values"].shape == (n, 3, 56, 56)
        start = enc.input_ids.index(151665)
        assert enc.input_ids[start : start + 4 * n + 2] == [151665, *[151667] * (4 * n), 151666]
        items.append(enc)
    tok = proc.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert label_runs(items[0].input_ids, items[0].labels, tok) == [
        tok(a, add_special_tokens=False)["input_ids"] + [im_end] for _, a in TURNS
    ]
    batch = FAMILY.collate(proc, [*items, FAMILY.encode(proc, [("Which is a solid?", "rock")], None, 4096)])
    assert "mm_token_type_ids" not in batch and batch["pixel_values"].shape[0] == sum(tiles.values())
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_a_released_template_gets_the_img_pair_added(tiny_intern) -> None:
    _, proc = tiny_intern
    released = replace(proc, chat_template=internvl.chatml_template(None, image_part="<IMG_CONTEXT>\n"))
    ours = FAMILY.encode(proc, TURNS, noise_image(56, 56), 4096)
    theirs = FAMILY.encode(released, TURNS, noise_image(56, 56), 4096)
    assert theirs.input_ids == ours.input_ids and theirs.labels == ours.labels


def test_boxes_are_relative_thousandths(tiny_intern) -> None:
    _, proc = tiny_intern
    assert FAMILY.target_to_family("[0.25, 0.375, 0.75, 0.625]", (640, 480), proc) == "[250, 333, 750, 667]"
    assert FAMILY.answer_from_family("<box>[[250, 333, 750, 667]]</box>", (640, 480), proc) == (
        "<box>[[0.25, 0.37, 0.75, 0.63]]</box>"
    )


def test_lora_spares_the_tower_and_the_merged_folder_loads(tiny_intern, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base, proc = tiny_intern
    config = LoraConfig(
        r=4, target_modules=FAMILY.lora_target_regex, modules_to_save=FAMILY.projector_modules(base)
    )
    model = get_peft_model(copy.deepcopy(base), config)
    adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and m.lora_A]
    assert len(adapted) == 7 * base.config.text_config.num_hidden_layers
    assert all(".language_model." in n for n in adapted)
    batch = FAMILY.collate(proc, [FAMILY.encode(proc, TURNS, noise_image(200, 100), 4096)])
    model(**batch).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("multi_modal_projector" in n for n in grads)
    assert not [n for n in grads if "lora_" not in n and "multi_modal_projector" not in n]
    merged = model.merge_and_unload()
    folder = FAMILY.save(merged, proc, tmp_path / "merged")
    assert '"InternVLProcessor"' in (folder / "processor_config.json").read_text()
    plain = AutoModelForImageTextToText.from_pretrained(folder)
    merged.eval()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, plain(**batch).logits, atol=1e-5)
    _, again = FAMILY.load(folder)
    assert again.image_seq_length == proc.image_seq_length == 4
