"""The Qwen3-VL family on a tiny model with the real Qwen2.5 vocabulary (CPU, no downloads).

What Qwen3-VL shares with Qwen2.5-VL (template rendering, labels, collator) is tested there; here: what
differs (patch 16, no default system turn, deep-stack projector, 0..1000 boxes) and the family end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sefe.models import qwen3_vl, vocab
from sefe.models.family import family_for_folder, get_family
from tests.helpers.qwen import label_runs, noise_image, require_qwen_vocab

VOCAB_DIR = vocab.vocab_dir()
FAMILY = get_family("qwen3_vl")
TURNS = [("<image>\nWhat is the object in the image?", "Espresso maker"), ("Its colour?", "Red")]


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_qwen_vocab(VOCAB_DIR)
    return FAMILY.tiny_dir(tmp_path_factory.mktemp("sefe-cache"))


@pytest.fixture(scope="module")
def tiny_qwen3(qwen3_dir: Path):
    return FAMILY.load(qwen3_dir)


def test_tiny_is_a_standard_qwen3_vl_folder(qwen3_dir: Path, tiny_qwen3) -> None:
    model, _ = tiny_qwen3
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert family_for_folder(qwen3_dir) is FAMILY
    assert FAMILY.tiny_dir(qwen3_dir.parent) == qwen3_dir  # cached


def test_no_default_system_turn_and_labels_on_answers(tiny_qwen3) -> None:
    _, proc = tiny_qwen3
    tok = proc.tokenizer
    enc = FAMILY.encode(proc, TURNS, noise_image(200, 100), max_length=4096)
    assert tok.decode(enc.input_ids).startswith("<|im_start|>user\n<|vision_start|><|image_pad|>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    runs = label_runs(enc.input_ids, enc.labels, tok)
    assert runs == [tok(a, add_special_tokens=False)["input_ids"] + [im_end] for _, a in TURNS]


def test_patch_16_token_counts_and_a_mixed_batch(tiny_qwen3) -> None:
    model, proc = tiny_qwen3
    # 64x64 -> 2x2 merged; 200x100 -> 192x96 -> 6x3; 640x480 over 32²·64 px -> 288x192 -> 9x6
    sizes = {(64, 64): 4, (200, 100): 18, (640, 480): 54}
    items = [FAMILY.encode(proc, TURNS, noise_image(w, h), 4096) for w, h in sizes]
    assert [e.input_ids.count(proc.image_token_id) for e in items] == list(sizes.values())
    batch = FAMILY.collate(proc, [*items, FAMILY.encode(proc, [("Which is a solid?", "rock")], None, 4096)])
    assert batch["pixel_values"].shape == (4 * sum(sizes.values()), 3 * 2 * 16 * 16)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_boxes_are_relative_thousandths() -> None:
    assert qwen3_vl.coin_box_to_qwen3([0.25, 0.375, 0.75, 0.625], (640, 480)) == [250, 333, 750, 667]
    back = qwen3_vl.qwen3_box_to_coin([250, 333, 750, 667], (640, 480))
    assert back == pytest.approx([0.25, 0.37475, 0.75, 0.62525], abs=1e-9)
    for size in [(640, 480), (480, 640), (1000, 90)]:
        w, h = size
        side = max(w, h)
        box = [(side - w) / 2 / side + 0.013, (side - h) / 2 / side + 0.021, 0.5 + 0.1 * w / side, 0.5]
        there = qwen3_vl.coin_box_to_qwen3(box, size)
        back = qwen3_vl.qwen3_box_to_coin(there, size)
        assert max(abs(a - b) for a, b in zip(back, box, strict=True)) <= 0.5 / 1000 * max(w, h) / side + 1e-9


def test_grounding_text_both_ways(tiny_qwen3) -> None:
    _, proc = tiny_qwen3
    assert (
        FAMILY.target_to_family("[0.25, 0.375, 0.75, 0.625] left", (640, 480), proc)
        == "[250, 333, 750, 667] left"
    )
    assert FAMILY.answer_from_family("[250, 333, 750, 667]", (640, 480), proc) == "[0.25, 0.37, 0.75, 0.63]"


def test_lora_on_language_linears_and_the_deep_stack_is_projector(tiny_qwen3, tmp_path: Path) -> None:
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base, proc = tiny_qwen3
    assert FAMILY.projector_modules(base) == ["merger", "deepstack_merger_list.0"]  # one deep-stack layer
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
    assert any("deepstack_merger_list" in n for n in grads) and any(".merger." in n for n in grads)
    assert not [n for n in grads if "lora_" not in n and "merger" not in n]
    merged = model.merge_and_unload()
    folder = FAMILY.save(merged, proc, tmp_path / "merged")
    plain = AutoModelForImageTextToText.from_pretrained(folder)
    merged.eval()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, plain(**batch).logits, atol=1e-5)
