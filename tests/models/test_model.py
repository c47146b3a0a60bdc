"""The tiny LLaVA (build, cache, save, reload, generate) and assembly from LLM + CLIP + mm_projector.bin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sefe.models.conversation import generation_prompt
from sefe.models.llava import ModelSource, load_llava, load_projector, save_llava
from sefe.models.tiny import TinyLlavaConfig, tiny_llava_dir
from sefe.models.tokenization import image_token_count


def _generate(model, processor, question: str, image) -> torch.Tensor:
    inputs = processor(
        text=[generation_prompt(question, image is not None)], images=image, return_tensors="pt"
    )
    with torch.inference_mode():
        return model.generate(**inputs, max_new_tokens=6, do_sample=False)


def test_model_source_choices() -> None:
    assert ModelSource().kind == "tiny"
    assert ModelSource(path="x").hf == "x"
    assert ModelSource(llm="a", vision="b", projector="c").kind == "parts"
    with pytest.raises(ValueError, match="together"):
        ModelSource(llm="a", vision="b")
    with pytest.raises(ValueError, match="exactly one"):
        ModelSource(hf="x", tiny=True)


def test_tiny_is_cached_and_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    stamp = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert tiny_llava_dir(cache_dir=tiny_dir.parent) == tiny_dir
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    other = tiny_llava_dir(cache_dir=tmp_path)
    assert other.name == tiny_dir.name
    assert (other / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    assert tiny_llava_dir(cache_dir=tmp_path, config=TinyLlavaConfig(seed=1)).name != tiny_dir.name


def test_tiny_processor_follows_llava(tiny) -> None:
    model, processor = tiny
    assert image_token_count(processor) == 16  # 32 px / patch 8, CLS dropped
    assert model.config.vision_feature_layer == -2
    assert model.config.vision_feature_select_strategy == "default"
    tok = processor.tokenizer
    assert [tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token] == ["<s>", "</s>", "<unk>", "<pad>"]
    assert tok.convert_tokens_to_ids("<image>") == model.config.image_token_id
    specials = {"<s>", "</s>", "<unk>", "<pad>", "<image>"}
    leaked = [t for t in tok.get_vocab() if t not in specials and any(s in t for s in specials)]
    assert leaked == []  # no ordinary piece decodes to a special token's text
    assert tok.decode(tok("USER: <image>\nWhat? ASSISTANT:")["input_ids"], skip_special_tokens=True) == (
        "USER: \nWhat? ASSISTANT:"
    )
    # a wide image is padded to a square with the mean colour, which normalises to zero
    wide = Image.new("RGB", (64, 16), (0, 0, 0))
    pix = processor.image_processor(images=wide, return_tensors="pt")["pixel_values"][0]
    assert pix.shape == (3, 32, 32)
    band = pix[:, :8, :].numpy()
    assert np.abs(band).max() < 0.03  # mean colour rows (rounded to uint8) ~ 0 after normalisation
    assert pix[:, 16, :].abs().min() > 1.0  # the black image itself is far from the mean


def test_tiny_saves_reloads_and_generates(tiny, tmp_path: Path) -> None:
    model, processor = tiny
    image = Image.new("RGB", (40, 24), (120, 30, 200))
    out = _generate(model, processor, "What colour is it?", image)
    assert out.shape[1] > 0
    folder = save_llava(model, processor, tmp_path / "merged")
    model2, processor2 = load_llava(ModelSource(hf=str(folder)))
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), model2.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    assert torch.equal(out, _generate(model2, processor2, "What colour is it?", image))
    text_only = _generate(model2, processor2, "Say something.", None)
    assert text_only.shape[0] == 1
    save_llava(model, processor, folder)  # overwriting an existing folder is atomic too
    assert (folder / "config.json").is_file()


# ---- path (b): Vicuna/Llama folder + CLIP folder + mm_projector.bin ----------------------------------------


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(3)
    # a Vicuna-like tokenizer: <unk> <s> </s> only (no <image>, no pad token: LLaVA v1 pads with <unk>)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=[chr(c) for c in range(32, 127)] + ["\n"],
        show_progress=False,
    )
    tok.train_from_iterator(["USER: What is it? ASSISTANT: A green field.</s>"] * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    plain = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(plain),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            bos_token_id=plain.bos_token_id,
            eos_token_id=plain.eos_token_id,
        )
    )
    assert "<image>" not in plain.get_vocab()
    llm.save_pretrained(root / "vicuna")
    plain.save_pretrained(root / "vicuna")
    clip = CLIPModel(
        CLIPConfig(
            text_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
            },
            vision_config={
                "hidden_size": 40,
                "intermediate_size": 80,
                "num_hidden_layers": 3,
                "num_attention_heads": 2,
                "image_size": 28,
                "patch_size": 14,
            },
            projection_dim=16,
        )
    )
    clip.save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(
        root / "clip"
    )
    projector = {
        "model.mm_projector.0.weight": torch.randn(48, 40),
        "model.mm_projector.0.bias": torch.randn(48),
        "model.mm_projector.2.weight": torch.randn(48, 48),
        "model.mm_projector.2.bias": torch.randn(48),
    }
    torch.save(projector, root / "mm_projector.bin")
    return {"llm": root / "vicuna", "vision": root / "clip", "projector": root / "mm_projector.bin"}


def test_assembly_from_parts(parts: dict[str, Path], tmp_path: Path) -> None:
    from transformers import CLIPModel, LlamaForCausalLM

    source = ModelSource(
        llm=str(parts["llm"]), vision=str(parts["vision"]), projector=str(parts["projector"])
    )
    model, processor = load_llava(source)
    proj = torch.load(parts["projector"], weights_only=True)
    mmp = model.model.multi_modal_projector
    assert torch.equal(mmp.linear_1.weight, proj["model.mm_projector.0.weight"])
    assert torch.equal(mmp.linear_1.bias, proj["model.mm_projector.0.bias"])
    assert torch.equal(mmp.linear_2.weight, proj["model.mm_projector.2.weight"])
    assert torch.equal(mmp.linear_2.bias, proj["model.mm_projector.2.bias"])
    assert type(mmp.act).__name__ == "GELUActivation"
    llm = LlamaForCausalLM.from_pretrained(parts["llm"])
    lm_sd = model.model.language_model.state_dict()
    n_old = llm.model.embed_tokens.weight.shape[0]
    for name, value in llm.model.state_dict().items():
        got = lm_sd[name]
        assert torch.equal(got[:n_old] if name == "embed_tokens.weight" else got, value), name
    assert torch.equal(model.lm_head.weight[:n_old], llm.lm_head.weight)
    clip = CLIPModel.from_pretrained(parts["vision"])
    for name, value in clip.vision_model.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], value), name
    # LLaVA-1.5: <image> added, layer -2, default strategy, (28/14)^2 = 4 image tokens, square padding
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids("<image>") == model.config.image_token_id == n_old
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert tok.pad_token == "<unk>"
    assert model.config.vision_feature_layer == -2 and processor.num_additional_image_tokens == 1
    assert image_token_count(processor) == 4 and processor.image_processor.do_pad
    # it runs, and a save/reload round trip gives the same logits
    image = Image.new("RGB", (50, 20), (10, 220, 30))
    inputs = processor(text=[generation_prompt("What is it?", True)], images=image, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits
    folder = save_llava(model, processor, tmp_path / "assembled")
    model2, processor2 = load_llava(str(folder))
    inputs2 = processor2(text=[generation_prompt("What is it?", True)], images=image, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], inputs2["input_ids"])
    with torch.inference_mode():
        assert torch.allclose(logits, model2(**inputs2).logits, atol=1e-5)


def test_bad_projector_file_is_named(tmp_path: Path, parts: dict[str, Path]) -> None:
    bad = tmp_path / "mm_projector.bin"
    torch.save({"model.mm_projector.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match=r"mm_projector.bin: not a LLaVA mm_projector file"):
        load_projector(bad)
    wrong = tmp_path / "wrong.bin"
    torch.save(
        {k: torch.zeros(3, 3) for k in ("model.mm_projector.0.weight", "model.mm_projector.2.weight")}
        | {k: torch.zeros(3) for k in ("model.mm_projector.0.bias", "model.mm_projector.2.bias")},
        wrong,
    )
    with pytest.raises(ValueError, match="shapes do not fit"):
        load_llava(ModelSource(llm=str(parts["llm"]), vision=str(parts["vision"]), projector=str(wrong)))
