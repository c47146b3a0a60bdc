"""Qwen2.5-VL's `SmallBuilder`: a small `Qwen2_5_VLForConditionalGeneration` for Micro-CoIN's warm start.

Same size class as the small LLaVA (2 LM layers, hidden 128; a 2-block vision tower, hidden 64), Qwen's own
parts otherwise: the ChatML template with its default system turn, 8 px patches merged 2x2 by the `merger`
(Qwen's projector) into one image token per 16 px grid cell, 3-D rotary positions, tied embeddings.
`min_pixels = max_pixels = image_size²`, so a 48 px picture is never resized: 6x6 patches, 9 image tokens.

The vocabulary is the locally trained micro BPE (one token per digit) with ChatML's and the vision markers
appended as special tokens, not Qwen's real 151k vocabulary: at hidden 128 its embedding and LM head would be
~19M of the model's parameters and dominate every CPU step, and the ordinary pieces (and their ids) are then
the LLaVA warm start's, so both families read and write the same tokens (a word after ChatML's newlines is
tokenised as one after a space, `▁Red` as LLaVA's `ASSISTANT: Red`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from sefe.models.family_types import SmallSizes
from sefe.models.qwen2_5_vl import CHAT_TEMPLATE, VISION_TOKENS
from sefe.models.tiny import CORPUS_LINES

BUILD_FORMAT = 1
#: ChatML's markers and the vision tokens, appended to the micro BPE (the ids `chatml_ids` looks up).
CHATML_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *VISION_TOKENS)


class SmallQwenConfig(BaseModel):
    """A small Qwen2.5-VL's sizes (`SmallSizes` mapped: a grid cell is `patch_size * merge_size` px)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    image_size: int = 48
    patch_size: int = 8
    merge_size: int = 2
    extra_corpus: tuple[str, ...] = ()
    split_digits: bool = True

    def digest(self) -> str:
        """The cache key of the built model: the family, build format, template, BPE corpus and sizes."""
        recipe = {
            "family": "qwen2_5_vl",
            "format": BUILD_FORMAT,
            "template": CHAT_TEMPLATE,
            "corpus": CORPUS_LINES,
            **self.model_dump(),
        }
        return hashlib.sha256(orjson.dumps(recipe, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def mrope_section(head_dim: int) -> list[int]:
    """Qwen's temporal / height / width split of the rotary half-dimension (1 : 1.5 : 1.5, as 16/24/24)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_small_qwen(config: SmallQwenConfig) -> tuple[Any, Any]:
    """(model, QwenProcessor) in memory, seeded."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from sefe.models.qwen2_5_vl import QwenProcessor, chatml_ids, qwen2_5_vl_configs, seeded_qwen_model
    from sefe.models.tiny import train_bpe

    tokenizer = train_bpe(
        config.vocab_size,
        config.extra_corpus,
        config.split_digits,
        config.max_position_embeddings,
        added_special=CHATML_TOKENS,
        word_after_newline=True,
    )
    tokenizer.pad_token = "<|endoftext|>"  # as Qwen's tokenizer
    tokenizer.eos_token = "<|im_end|>"
    ids = chatml_ids(tokenizer)
    pixels = config.image_size * config.image_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=config.patch_size, merge_size=config.merge_size, min_pixels=pixels, max_pixels=pixels
    )
    text, vision = qwen2_5_vl_configs(
        config,
        len(tokenizer),
        ids,
        mrope_section(config.hidden_size // config.num_heads),
        {
            "patch_size": config.patch_size,
            "spatial_merge_size": config.merge_size,
            "window_size": 4 * config.patch_size * config.merge_size,  # 4x4 merged tokens, as Qwen's 112 px
        },
    )
    model = seeded_qwen_model(
        Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, text, vision, ids, config.seed
    )
    return model, QwenProcessor(tokenizer, image_processor, CHAT_TEMPLATE)


class QwenSmall:
    """Small Qwen2.5-VL: cells are the merger's outputs (one per 2x2 patches); stage 1 trains the whole
    `visual` (tower + merger), stage 2 freezes the tower and trains the merger with the LM."""

    name = "qwen2_5_vl"

    def config(self, sizes: SmallSizes) -> SmallQwenConfig:
        if sizes.cell_px % 2:
            raise ValueError(f"a grid cell of {sizes.cell_px} px cannot be 2x2 merged patches")
        return SmallQwenConfig(
            **sizes.model_dump(exclude={"cell_px"}), patch_size=sizes.cell_px // 2, merge_size=2
        )

    def build(self, config: Any) -> tuple[Any, Any]:
        return build_small_qwen(config)

    def vision_inputs(self, processor: Any, images: list[Any]) -> dict[str, Any]:
        """Patch rows per picture (pictures x rows x dim) and their grids; all pictures one size."""
        out = processor.image_processor(images=images, return_tensors="pt")
        grid = out["image_grid_thw"]
        if len(images) and not bool((grid == grid[0]).all()):
            raise ValueError("small-model pictures must all have one size (their patch rows are stacked)")
        rows = out["pixel_values"]
        return {"pixel_values": rows.view(len(images), -1, rows.shape[-1]), "image_grid_thw": grid}

    def cell_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        rows = inputs["pixel_values"]
        merged = model.model.visual(rows.flatten(0, 1), grid_thw=inputs["image_grid_thw"]).pooler_output
        return merged.view(rows.shape[0], -1, merged.shape[-1])

    def cell_width(self, model: Any) -> int:
        return int(model.config.vision_config.out_hidden_size)

    def tower(self, model: Any) -> Any:
        return model.model.visual

    def frozen(self, model: Any) -> list[Any]:
        return [m for name, m in model.model.visual.named_children() if name != "merger"]

    def corpus(self, records: Path, data_root: Path, processor: Any, max_length: int) -> tuple[Any, Any]:
        """The corpus through the family's encode / collate; its boxes in Qwen's pixels, as Locate trains."""
        from sefe.models.family_dataset import FamilyCollator, FamilyDataset
        from sefe.models.qwen2_5_vl import FAMILY

        dataset = FamilyDataset(
            records, data_root, FAMILY, processor, max_length, box_answers=True, box_optional=True
        )
        return dataset, FamilyCollator(FAMILY, processor)


SMALL = QwenSmall()
