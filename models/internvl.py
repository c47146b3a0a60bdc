"""InternVL (transformers 5's HF-native `InternVLForConditionalGeneration`) as a sefe model family.

InternVL3 pairs an InternViT tower with a Qwen2.5 language model (`model.language_model`), so this module
reuses `qwen2_5_vl`'s ChatML rendering, labels and collator, and changes what differs:

- **Images: tiles.** The image processor (`GotOcr2ImageProcessor`, `crop_to_patches`) cuts an image into
  1..`max_patches` square tiles on the grid closest to its aspect ratio, plus a thumbnail when there is more
  than one tile; each tile gives `image_seq_length` tokens (256 at 448 px: 32x32 patches, pixel-shuffled by
  0.5). The image slot becomes `<img>` + `<IMG_CONTEXT>` x (tiles x 256) + `</img>`; tiles of all images
  are concatenated in batch order (`pixel_values` tiles x 3 x S x S). No `mm_token_type_ids`: positions are
  1-D. A released folder's template writes only `<IMG_CONTEXT>` (ours too, since build format 2), and
  `expansion` adds the pair (a template that writes the pair itself, sefe's before format 2, keeps it).
- **Saved folders** are standard `InternVLProcessor` folders: the tokenizer names its image tokens
  (`start_image_token` ..., which transformers' processor and vLLM read) and has `<video>`, as released.
- **Projector.** `multi_modal_projector` (an MLP after the pixel shuffle), as LLaVA's name.
- **Boxes.** Relative to the image on a 0..1000 scale, as Qwen3-VL (`qwen3_vl.coin_box_to_qwen3`).
- **Processor.** transformers' `InternVLProcessor` also insists on a video processor (torchvision), so the
  parts are held by `InternProcessor`, like `QwenProcessor`.
- **Tiny model.** The real Qwen2.5 vocabulary plus InternVL's added tokens at InternVL3's ids
  (`<IMG_CONTEXT>` = 151667, the config default; `<video>` = 151674, as the -hf conversion adds it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from sefe.models.qwen2_5_vl import (
    Qwen2_5_VLFamily,
    QwenProcessor,
    cached_tiny,
    chat_template_of,
    chatml_template,
    load_model,
    recipe_digest,
)
from sefe.models.qwen3_vl import coin_box_to_qwen3, qwen3_box_to_coin

BUILD_FORMAT = 2
START, CONTEXT, END, VIDEO = "<img>", "<IMG_CONTEXT>", "</img>", "<video>"
#: InternVL3-hf's added tokens after Qwen2.5's 151665, in id order (`<IMG_CONTEXT>` = 151667).
ADDED_TOKENS = (START, END, CONTEXT, "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>", VIDEO)
#: The tokenizer's named image tokens, which transformers' `InternVLProcessor` (and so vLLM) reads.
NAMED_TOKENS = {
    "start_image_token": START,
    "end_image_token": END,
    "context_image_token": CONTEXT,
    "video_token": VIDEO,
}
CHAT_TEMPLATE = chatml_template(None, image_part=f"{CONTEXT}\n")


@dataclass
class InternProcessor(QwenProcessor):
    """Tokenizer, tiling image processor, template and tokens per tile of an InternVL folder."""

    image_seq_length: int = 256
    mark_image_tokens = False

    @property
    def image_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(CONTEXT))

    def image_inputs(self, image: Any) -> tuple[dict[str, Any], int]:
        out = self.image_processor(images=[image], return_tensors="pt")
        tiles = int(out["num_patches"][0])
        return {"pixel_values": out["pixel_values"]}, tiles * self.image_seq_length

    def expansion(self, count: int) -> list[int]:
        context = [self.image_token_id] * count
        if START in self.chat_template:  # the template writes the pair around the slot itself
            return context
        ids = self.tokenizer.convert_tokens_to_ids([START, END])
        return [int(ids[0]), *context, int(ids[1])]

    def save_pretrained(self, folder: str | Path) -> None:
        super().save_pretrained(folder)
        config = {"processor_class": "InternVLProcessor", "image_seq_length": self.image_seq_length}
        (Path(folder) / "processor_config.json").write_text(
            json.dumps(config, indent=2) + "\n", encoding="utf-8"
        )
        name_image_tokens(Path(folder) / "tokenizer_config.json")


def name_image_tokens(tokenizer_config: Path) -> None:
    """Add the named image tokens (`NAMED_TOKENS`) that a released InternVL tokenizer config carries and a
    tokenizer built here lacks; a name the config already gives (at the top or in an `extra_special_tokens`
    mapping, as released -hf folders do) keeps its token."""
    config = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    named = config.get("extra_special_tokens")
    given = set(config) | (set(named) if isinstance(named, dict) else set())
    config.update({name: token for name, token in NAMED_TOKENS.items() if name not in given})
    tokenizer_config.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_processor(folder: str | Path) -> InternProcessor:
    from transformers import AutoTokenizer
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    image_processor = GotOcr2ImageProcessorPil.from_pretrained(str(folder))
    config = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
    seq = int(config.get("image_seq_length", 256))
    return InternProcessor(
        tokenizer, image_processor, chat_template_of(folder, tokenizer), image_seq_length=seq
    )


class TinyInternConfig(BaseModel):
    """Sizes of the tiny InternVL: 56-px tiles (4x4 patches of 14, pixel-shuffled to 4 tokens), up to 4
    tiles, 2 vision and 2 text layers, hidden 64."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    tile: int = 56
    max_tiles: int = 4

    def digest(self) -> str:
        return recipe_digest(self, BUILD_FORMAT, CHAT_TEMPLATE)


def build_tiny(config: TinyInternConfig | None = None, vocab_folder: Path | None = None):
    """(InternVLForConditionalGeneration, InternProcessor) in memory, seeded, with the real vocabulary."""
    import torch
    from tokenizers import AddedToken
    from transformers import GenerationConfig, InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from sefe.models.vocab import qwen2_tokenizer

    config = config or TinyInternConfig()
    tokenizer = qwen2_tokenizer(vocab_folder)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS]},
        replace_extra_special_tokens=False,
    )
    im_end, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": config.tile, "width": config.tile},
        crop_to_patches=True,
        min_patches=1,
        max_patches=config.max_tiles,
    )
    seq = (config.tile // 14) ** 2 // 4  # patches per tile, pixel-shuffled by 0.5 in each direction
    model_config = InternVLConfig(
        vision_config={
            "hidden_size": config.vision_hidden_size,
            "intermediate_size": config.vision_intermediate_size,
            "num_hidden_layers": config.vision_layers,
            "num_attention_heads": config.vision_heads,
            "image_size": [config.tile, config.tile],
            "patch_size": [14, 14],
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": config.hidden_size,
            "intermediate_size": config.intermediate_size,
            "num_hidden_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "num_key_value_heads": config.num_kv_heads,
            "eos_token_id": im_end,
            "pad_token_id": pad,
            "tie_word_embeddings": True,
        },
        image_token_id=tokenizer.convert_tokens_to_ids(CONTEXT),
        image_seq_length=seq,
        downsample_ratio=0.5,
        tie_word_embeddings=True,
    )
    torch.manual_seed(config.seed)
    model = InternVLForConditionalGeneration(model_config)
    model.generation_config = GenerationConfig(eos_token_id=im_end, pad_token_id=pad, do_sample=False)
    return model, InternProcessor(tokenizer, image_processor, CHAT_TEMPLATE, image_seq_length=seq)


def tiny_dir(cache_dir: Path | None = None, config: TinyInternConfig | None = None) -> Path:
    config = config or TinyInternConfig()
    return cached_tiny(cache_dir, f"tiny-internvl-{config.digest()}", config, lambda: build_tiny(config))


class InternVLFamily(Qwen2_5_VLFamily):
    """InternVL through the `ModelFamily` contract (see the module docstring)."""

    name = "internvl"
    model_class = "InternVLForConditionalGeneration"

    def projector_modules(self, model: Any) -> list[str]:
        return ["multi_modal_projector"]

    def load(self, path: str | Path, dtype: Any = "float32", attn_implementation: str = "sdpa") -> tuple:
        return load_model(path, dtype, attn_implementation, self.model_class), load_processor(path)

    def load_processor(self, path: str | Path) -> Any:
        return load_processor(path)

    def tiny_dir(self, cache_dir: Path | None = None) -> Path:
        return tiny_dir(cache_dir)

    def box_to_family(self, box: Sequence[float], image_size: tuple[int, int], processor: Any) -> list[float]:
        return [float(v) for v in coin_box_to_qwen3(box, image_size)]

    def box_from_family(
        self, box: Sequence[float], image_size: tuple[int, int], processor: Any
    ) -> list[float]:
        return qwen3_box_to_coin(box, image_size)


FAMILY = InternVLFamily()
