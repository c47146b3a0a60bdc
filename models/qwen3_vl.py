"""Qwen3-VL as a sefe model family, on transformers 5's `Qwen3VLForConditionalGeneration`.

Qwen3-VL keeps Qwen2.5-VL's data path, so this module reuses `qwen2_5_vl` for the template rendering, the
labels, the collator and generation inputs, and changes only what differs:

- **Images.** Patch 16 (not 14) with the same 2x2 merge: sizes are multiples of 32 px and an image gives
  (h/16)(w/16)/4 tokens. The vision tower also feeds three intermediate layers into the language model
  through `deepstack_merger_list`; with `merger` they form the projector (`projector_modules`).
- **Template.** ChatML with no default system turn (Qwen3's templates add none); a real folder brings its own.
- **Boxes.** Qwen3-VL grounds in coordinates relative to the image on a 0..1000 scale, whatever the resize:
  CoIN `[0.25, 0.375, 0.75, 0.625]` on a 640 x 480 image (top pad 80 on the 640 square) is, on the image,
  x 160..480 and y 160..320 px, i.e. `[250, 333, 750, 667]`; back, 333 -> 159.8 px -> (159.8 + 80) / 640 =
  0.3747 -> "0.37" (the round trip is exact to 1/1000 of the image side).
- **Tiny model.** The real Qwen2.5 vocabulary (Qwen3-VL's tokenizer is the same byte-level BPE with the
  same vision-token ids and four more added tokens, `<think>` etc., which a test model does not need).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from sefe.models.qwen2_5_vl import (
    Qwen2_5_VLFamily,
    QwenProcessor,
    cached_tiny,
    chatml_ids,
    chatml_template,
    recipe_digest,
    seeded_qwen_model,
)

BUILD_FORMAT = 1
CHAT_TEMPLATE = chatml_template(None)
SCALE = 1000  # Qwen3-VL's relative coordinate range


class TinyQwen3Config(BaseModel):
    """Sizes of the tiny Qwen3-VL: 2 text and 2 vision layers (deep stack from vision layer 0), hidden 64,
    images resized within 64x64 .. 32·32·64 pixels (4 to 64 image tokens)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    mrope_section: tuple[int, int, int] = (2, 3, 3)  # sums to head_dim / 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_position_embeddings: int = 64  # a square: the tower interpolates an 8x8 grid of position rows
    min_pixels: int = 64 * 64
    max_pixels: int = 32 * 32 * 64

    def digest(self) -> str:
        return recipe_digest(self, BUILD_FORMAT, CHAT_TEMPLATE)


def build_tiny(config: TinyQwen3Config | None = None, vocab_folder: Path | None = None):
    """(Qwen3VLForConditionalGeneration, QwenProcessor) in memory, seeded, with the real vocabulary."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from sefe.models.vocab import qwen2_tokenizer

    config = config or TinyQwen3Config()
    tokenizer = qwen2_tokenizer(vocab_folder)
    ids = chatml_ids(tokenizer)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
        patch_size=16,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": list(config.mrope_section),
            "mrope_interleaved": True,
            "rope_theta": 5e6,
        },
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": True,
    }
    vision = {
        "depth": config.vision_layers,
        "hidden_size": config.vision_hidden_size,
        "intermediate_size": config.vision_intermediate_size,
        "num_heads": config.vision_heads,
        "patch_size": 16,
        "out_hidden_size": config.hidden_size,
        "num_position_embeddings": config.vision_position_embeddings,
        "deepstack_visual_indexes": [0],
    }
    model = seeded_qwen_model(Qwen3VLConfig, Qwen3VLForConditionalGeneration, text, vision, ids, config.seed)
    return model, QwenProcessor(tokenizer, image_processor, CHAT_TEMPLATE)


def tiny_dir(cache_dir: Path | None = None, config: TinyQwen3Config | None = None) -> Path:
    """The tiny Qwen3-VL folder, built once per config under `$SEFE_CACHE` (atomic publish)."""
    config = config or TinyQwen3Config()
    return cached_tiny(cache_dir, f"tiny-qwen3_vl-{config.digest()}", config, lambda: build_tiny(config))


def coin_box_to_qwen3(box: Sequence[float], image_size: tuple[int, int]) -> list[int]:
    """A CoIN box (fractions of the padded square) -> Qwen3-VL's 0..1000 box relative to the image."""
    width, height = image_size
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    xs = [(box[0] * side - dx) / width, (box[2] * side - dx) / width]
    ys = [(box[1] * side - dy) / height, (box[3] * side - dy) / height]
    x1, x2 = (min(max(round(v * SCALE), 0), SCALE) for v in xs)
    y1, y2 = (min(max(round(v * SCALE), 0), SCALE) for v in ys)
    return [x1, y1, x2, y2]


def qwen3_box_to_coin(box: Sequence[float], image_size: tuple[int, int]) -> list[float]:
    """Qwen3-VL's 0..1000 box -> CoIN's fractions of the padded square (unrounded)."""
    width, height = image_size
    side = max(width, height)
    dx, dy = (side - width) / 2, (side - height) / 2
    x1, x2 = ((v / SCALE * width + dx) / side for v in (box[0], box[2]))
    y1, y2 = ((v / SCALE * height + dy) / side for v in (box[1], box[3]))
    return [x1, y1, x2, y2]


class Qwen3VLFamily(Qwen2_5_VLFamily):
    """Qwen3-VL through the `ModelFamily` contract (see the module docstring)."""

    name = "qwen3_vl"
    model_class = "Qwen3VLForConditionalGeneration"

    def projector_modules(self, model: Any) -> list[str]:
        """`merger` and each deep-stack merger (PEFT cannot wrap their ModuleList as one module)."""
        stacks = [m for name, m in model.named_modules() if name.endswith("deepstack_merger_list")]
        return ["merger", *[f"deepstack_merger_list.{i}" for i in range(len(stacks[0]) if stacks else 0)]]

    def tiny_dir(self, cache_dir: Path | None = None) -> Path:
        return tiny_dir(cache_dir)

    def box_to_family(self, box: Sequence[float], image_size: tuple[int, int], processor: Any) -> list[float]:
        return [float(v) for v in coin_box_to_qwen3(box, image_size)]

    def box_from_family(
        self, box: Sequence[float], image_size: tuple[int, int], processor: Any
    ) -> list[float]:
        return qwen3_box_to_coin(box, image_size)


FAMILY = Qwen3VLFamily()
