"""LLaVA's `SmallBuilder`: the small LLaVA of Micro-CoIN's warm start (tiny CLIP tower + Llama LM).

The sizes map one to one onto `TinyLlavaConfig` (a CLIP patch is one grid cell), so the model, its digest and
everything cached under it are those of the config written out by hand before families existed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sefe.models.family_types import SmallSizes
from sefe.models.tiny import TinyLlavaConfig


class LlavaSmall:
    """Small LLaVA: cells are the CLIP patches of `vision_feature_layer` (CLS dropped, as LLaVA passes them);
    stage 1 trains the CLIP tower, stage 2 freezes it (the projector and LM train)."""

    name = "llava"

    def config(self, sizes: SmallSizes) -> TinyLlavaConfig:
        return TinyLlavaConfig(
            seed=sizes.seed,
            vocab_size=sizes.vocab_size,
            hidden_size=sizes.hidden_size,
            intermediate_size=sizes.intermediate_size,
            num_layers=sizes.num_layers,
            num_heads=sizes.num_heads,
            num_kv_heads=sizes.num_kv_heads,
            max_position_embeddings=sizes.max_position_embeddings,
            vision_hidden_size=sizes.vision_hidden_size,
            vision_intermediate_size=sizes.vision_intermediate_size,
            vision_layers=sizes.vision_layers,
            vision_heads=sizes.vision_heads,
            image_size=sizes.image_size,
            patch_size=sizes.cell_px,
            extra_corpus=sizes.extra_corpus,
            split_digits=sizes.split_digits,
        )

    def build(self, config: Any) -> tuple[Any, Any]:
        from sefe.models.tiny import build_tiny_llava

        return build_tiny_llava(config)

    def vision_inputs(self, processor: Any, images: list[Any]) -> dict[str, Any]:
        return {"pixel_values": processor.image_processor(images=images, return_tensors="pt")["pixel_values"]}

    def cell_features(self, model: Any, inputs: dict[str, Any]) -> Any:
        tower = model.model.vision_tower
        hidden = tower(inputs["pixel_values"], output_hidden_states=True).hidden_states
        return hidden[model.config.vision_feature_layer][:, 1:]

    def cell_width(self, model: Any) -> int:
        return int(model.config.vision_config.hidden_size)

    def tower(self, model: Any) -> Any:
        return model.model.vision_tower

    def frozen(self, model: Any) -> list[Any]:
        return [model.model.vision_tower]

    def corpus(self, records: Path, data_root: Path, processor: Any, max_length: int) -> tuple[Any, Any]:
        from sefe.models.dataset import DataCollator, LlavaDataset

        return LlavaDataset(records, data_root, processor, max_length=max_length), DataCollator(processor)


SMALL = LlavaSmall()
