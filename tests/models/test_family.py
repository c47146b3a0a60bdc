"""The model-family registry and the LLaVA-1.5 adapter (it must give what the parity code gives)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from sefe.errors import InputError, MissingFile
from sefe.models.family import (
    FAMILY,
    LANGUAGE_MODEL_LINEARS,
    ModelFamily,
    family_for_folder,
    family_names,
    get_family,
    resolve_family,
)


def test_registry_knows_llava_and_qwen() -> None:
    assert family_names() == ["internvl", "llava", "qwen2_5_vl", "qwen3_vl"]
    for name in family_names():
        family = get_family(name)
        assert isinstance(family, ModelFamily) and family.name == name
    assert get_family("llava").projector_modules(None) == ["multi_modal_projector"]
    with pytest.raises(
        InputError,
        match=r"model.family: unknown model family 'gpt2' \(known: internvl, llava, qwen2_5_vl, qwen3_vl\)",
    ):
        get_family("gpt2")


def test_family_from_config_json(tiny_dir: Path, tmp_path: Path) -> None:
    assert family_for_folder(tiny_dir).name == "llava"
    assert resolve_family(None, tiny_dir).name == "llava"
    assert resolve_family("qwen2_5_vl", tiny_dir).name == "qwen2_5_vl"  # the config's choice wins
    assert resolve_family(None, None) is FAMILY
    with pytest.raises(MissingFile, match=r"config\.json"):
        family_for_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match=r"config.json, field 'model_type': unknown model family 'bert'"):
        family_for_folder(tmp_path)


def test_lora_regex_spares_vision_towers() -> None:
    import re

    rx = re.compile(LANGUAGE_MODEL_LINEARS)
    assert rx.fullmatch("model.language_model.layers.3.self_attn.q_proj")
    assert rx.fullmatch("model.language_model.layers.0.mlp.down_proj")
    assert not rx.fullmatch("model.visual.blocks.0.mlp.gate_proj")  # Qwen's vision MLP has the same names
    assert not rx.fullmatch("model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj")


def test_llava_adapter_gives_the_training_datasets_batch(tiny, data_root: Path) -> None:
    from sefe.models.dataset import DataCollator, LlavaDataset

    _, processor = tiny
    records = data_root / "annotations" / "GQA" / "train.json"
    dataset = LlavaDataset(records, data_root, processor, max_length=2048)
    family = get_family("llava")
    for index in range(len(dataset)):
        _, image_name, turns = dataset.records[index]
        image = Image.open(data_root / image_name).convert("RGB") if image_name else None
        ours = family.collate(processor, [family.encode(processor, turns, image, 2048)])
        theirs = DataCollator(processor)([dataset[index]])
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(ours[key], theirs[key]), key


def test_llava_adapter_generation_inputs_match_the_parity_path(tiny) -> None:
    from sefe.models.conversation import generation_prompt
    from sefe.models.tokenization import generation_inputs

    _, processor = tiny
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    questions = ["What is in the picture?", "Which is a solid?"]
    ours = get_family("llava").generation_inputs(processor, questions, [image, None])
    prompts = [generation_prompt(questions[0], True), generation_prompt(questions[1], False)]
    theirs = generation_inputs(processor, prompts, [image])
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    with pytest.raises(ValueError, match="2 questions but 1 image slots"):
        get_family("llava").generation_inputs(processor, questions, [image])


def test_llava_processor_alone_prompts_as_the_loaded_one(tiny, tiny_dir: Path) -> None:
    """`load_processor` (what vLLM's box conversion loads, no weights) gives `load`'s prompts and ids."""
    from sefe.models.conversation import generation_prompt

    _, loaded = tiny
    family = get_family("llava")
    alone = family.load_processor(tiny_dir)
    assert family.prompt_text(alone, "Which is a solid?", True) == generation_prompt(
        "Which is a solid?", True
    )
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    ours = family.generation_inputs(alone, ["What is in the picture?"], [image])
    theirs = family.generation_inputs(loaded, ["What is in the picture?"], [image])
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_llava_boxes_are_coin_boxes(tiny) -> None:
    _, processor = tiny
    family = get_family("llava")
    box = [0.12, 0.34, 0.56, 0.78]
    assert family.box_to_family(box, (640, 480), processor) == box
    assert family.box_from_family(box, (640, 480), processor) == box
    assert (
        family.target_to_family("[0.12, 0.34, 0.56, 0.78]", (640, 480), processor)
        == "[0.12, 0.34, 0.56, 0.78]"
    )


def test_seven_b_shapes_adapt_196_and_224_linears() -> None:
    """RegLoRA normalises its penalty by the number of LoRA modules: 196 in Qwen2.5-VL-7B, 224 in LLaVA-7B
    (built on the meta device: shapes only, no memory)."""
    import re

    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    qwen = Qwen2_5_VLConfig(  # Qwen2.5-VL-7B-Instruct's sizes
        text_config={
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
        },
        vision_config={"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16},
    )
    clip = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14
    )
    llava = LlavaConfig(text_config=LlamaConfig(), vision_config=clip)  # LlamaConfig() is LLaMA-2-7B's
    counts = {}
    for name, cls, config in [
        ("qwen2_5_vl", Qwen2_5_VLForConditionalGeneration, qwen),
        ("llava", LlavaForConditionalGeneration, llava),
    ]:
        with torch.device("meta"):
            model = cls(config)
        rx = re.compile(get_family(name).lora_target_regex)
        linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and rx.fullmatch(n)]
        assert not [n for n in linears if "visual" in n or "vision" in n]
        counts[name] = len(linears)
    assert counts == {"qwen2_5_vl": 196, "llava": 224}
